"""Datasets: sources (published layouts) -> Manifest -> resized image arrays."""
