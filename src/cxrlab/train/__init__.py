"""Training: losses and the epoch loop."""
