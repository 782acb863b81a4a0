"""NERO Explorer: explainable out-of-distribution detection with neuron-level relevance."""

__version__ = "0.1.0"
DEFAULT_SEED = 42  # every seeded step (splits, training, UMAP) unless the user gives one
DEFAULT_BATCH_SIZE = 32  # images per forward pass (training, evaluation, scoring)
