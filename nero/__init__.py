"""NERO Explorer: explainable out-of-distribution detection with neuron-level relevance."""

__version__ = "0.1.0"
