"""The classifier: building and loading it, its sidecar, training, the batched forward pass."""
