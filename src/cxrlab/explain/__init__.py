"""Explanations: class activation maps and box extraction/scoring."""
