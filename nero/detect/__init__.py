"""Scores: head relevance, the NERO detector, the method registry and baselines, metrics."""
