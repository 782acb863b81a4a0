"""Baseline OOD detectors behind the common method interface (higher = more OOD).

Every method is fitted on the in-distribution training evidence of the single forward pass
(penultimate features, logits, labels) plus the classifier head ``W`` (C×D), ``b`` (C), and
scores any evidence. Definitions follow NERO spec §5 where it states them, otherwise the
method's paper. Where pytorch-ood (0.4.0) implements a method with the same semantics and
sign (higher = more OOD), its detector does the work through ``fit_features`` /
``predict_features`` / ``predict_feature_maps`` / static ``score`` on cached arrays; where it
lacks the method or differs, the method is ours and its docstring says why. pytorch-ood and
torch are imported lazily, so listing the methods stays cheap; pytorch-ood downloads nothing
for these detectors.
"""
