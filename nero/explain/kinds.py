"""The heatmap kinds: one entry each — what it explains, in words the CLI and the dashboard
share. Light on purpose (no torch): the command line builds its choices from it."""

from __future__ import annotations

from dataclasses import dataclass

# Part of every cached heatmap's (and the run's colour scale's) file name: bumped when a
# kind's meaning changes, so no old map is shown under a new meaning.
CACHE_VERSION = 5


@dataclass(frozen=True)
class HeatmapKind:
    name: str
    explains: str  # one clause: what the map's evidence is evidence for
    # Starting at the head's input: the NERO detector method that gives the starting
    # relevance from a sample's relevance and its centroid (None: starts at the logits).
    from_detector: str | None = None
    takes_target: bool = True  # False: the kind starts from every class at once
    # A figure's title; {target}: the target's name (a class name, or the neuron's index).
    title: str = "{target}"

    @property
    def from_features(self) -> bool:
        return self.from_detector is not None


HEATMAP_KINDS: dict[str, HeatmapKind] = {
    k.name: k
    for k in (
        HeatmapKind("class", "a class logit", title="class heatmap: logit of {target}"),
        HeatmapKind(
            "nero",
            "NERO's softmax-weighted relevance",
            takes_target=False,
            title="NERO relevance heatmap (all classes, softmax-weighted)",
        ),
        HeatmapKind(
            "ood",
            "the deviation from the nearest class centroid",
            from_detector="deviation",
            title="OOD heatmap: deviation from the {target} centroid",
        ),
        HeatmapKind(
            "distance",
            "each neuron's share of NERO's distance to that centroid",
            from_detector="distance_shares",
            title="OOD heatmap: share of NERO's distance to the {target} centroid",
        ),
        HeatmapKind(
            "neuron",
            "where one neuron fires",
            title="where neuron {target} fires (its conditional heatmap)",
        ),
    )
}
KINDS: tuple[str, ...] = tuple(HEATMAP_KINDS)
FEATURE_KINDS: tuple[str, ...] = tuple(k for k, v in HEATMAP_KINDS.items() if v.from_features)


def kinds_help() -> str:
    """``kind: what it explains; …`` for a command-line help text."""
    return "; ".join(f"{k.name}: {k.explains}" for k in HEATMAP_KINDS.values())


HEATMAP_DIR = "heatmaps"  # in a run: cached heatmaps, the envelope, the colour scale


def cache_name(index: int, kind: str, target: int | None) -> str:
    """The file name of sample ``index``'s cached ``kind`` map (``RUN/heatmaps/``)."""
    return f"{index}_{kind}_{'auto' if target is None else target}.v{CACHE_VERSION}.npz"
