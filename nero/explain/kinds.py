"""The heatmap kinds: one entry each — what it explains, in words the CLI and the dashboard
share. Light on purpose (no torch): the command line builds its choices from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeatmapKind:
    name: str
    explains: str  # one clause: what the map's evidence is evidence for
    from_features: bool = False  # starts at the head's input, not at the logits


HEATMAP_KINDS: dict[str, HeatmapKind] = {
    k.name: k
    for k in (
        HeatmapKind("class", "a class logit"),
        HeatmapKind("nero", "NERO's softmax-weighted relevance"),
        HeatmapKind("ood", "the deviation from the nearest class centroid", from_features=True),
        HeatmapKind(
            "distance",
            "each neuron's share of NERO's distance to that centroid",
            from_features=True,
        ),  # fmt: skip
        HeatmapKind("neuron", "where one neuron fires"),
    )
}
KINDS: tuple[str, ...] = tuple(HEATMAP_KINDS)
FEATURE_KINDS: tuple[str, ...] = tuple(k for k, v in HEATMAP_KINDS.items() if v.from_features)


def kinds_help() -> str:
    """``kind: what it explains; …`` for a command-line help text."""
    return "; ".join(f"{k.name}: {k.explains}" for k in HEATMAP_KINDS.values())
