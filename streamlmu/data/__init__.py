"""Datasets: Speech Commands v2 (real or synthetic) in its published layout."""
