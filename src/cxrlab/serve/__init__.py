"""Inference: predictions for new images from a run folder (PyTorch or ONNX Runtime)."""
