"""Data loading, preprocessing and training utilities."""
