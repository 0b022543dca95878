"""Evaluation: metrics, statistics and prediction tables."""
