"""How many of a run's flags rest mostly on the frame: a run-level count for the dashboard.

A flag whose OOD heatmap puts most of its evidence on the frame (the unlit surround, burnt-in
text, markers; :mod:`nero.explain.field_of_view`) says more about how the frame was recorded
than about the patient. Heatmaps cost a backward pass each, so only the flags whose OOD map
has already been computed (``RUN/heatmaps/``, by the inspector or ``nero heatmap``) are
counted, and the count says how many that is. Each map's frame share is measured by the
heatmap owner as it makes or loads the map (:func:`share_of`, :func:`record_shares`) and
kept in ``RUN/heatmaps/frame_shares.json`` (keyed by the cached map's file name, which carries
the heatmap cache's version); the worklist only reads that file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nero.explain.field_of_view import frame_share
from nero.explain.kinds import HEATMAP_DIR, cache_name
from nero.files import write_json
from nero.run.directory import Run

SHARES_FILE = "frame_shares.json"
MOSTLY = 0.5  # "mostly on the frame": more than half of the map's positive evidence


@dataclass(frozen=True)
class FrameFlags:
    """Of ``flagged`` images, ``with_map`` have an OOD heatmap; ``on_frame`` (rows) of those
    put most of its evidence on the frame."""

    flagged: int
    with_map: int
    on_frame: list[int]

    def sentence(self) -> str:
        if not self.with_map:
            return (
                f"None of the {self.flagged} flagged images has an OOD heatmap yet: open them "
                "in the inspector to see whether their evidence lies on the tissue or the frame."
            )
        return (
            f"{len(self.on_frame)} of the {self.with_map} flagged images whose OOD heatmap has "
            f"been computed (of {self.flagged} flagged) put most of its evidence on the frame "
            "(dark surround, burnt-in text, markers), not on the tissue."
        )


def _shares_file(run: Run) -> Path:
    return run.path / HEATMAP_DIR / SHARES_FILE


def _read_shares(run: Run) -> dict[str, float]:
    try:
        return json.loads(_shares_file(run).read_text()) if _shares_file(run).is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged record: the maps' shares are measured again when next drawn


def has_share(run: Run, index: int) -> bool:
    return cache_name(index, "ood", None) in _read_shares(run)


def record_shares(run: Run, shares: dict[int, float]) -> None:
    """Keep the frame shares of samples' OOD maps (sample → share), beside the maps."""
    if not shares:
        return
    known = _read_shares(run)
    known.update({cache_name(int(i), "ood", None): round(float(v), 4) for i, v in shares.items()})
    try:
        write_json(_shares_file(run), known)
    except OSError as exc:  # a read-only run still gets its maps
        warnings.warn(
            f"could not keep the frame shares in {_shares_file(run)}: {exc}", stacklevel=2
        )


def share_of(relevance: np.ndarray, image: np.ndarray) -> float:
    """A map's share of positive evidence on the frame (0 for an image without one)."""
    share = frame_share(relevance, np.asarray(image))
    return share.frame if share.has_frame else 0.0


def frame_flags(run: Run, flagged: Sequence[int]) -> FrameFlags:
    """Count the flags (rows of ``flagged``) whose OOD map lies mostly on the frame, from the
    shares kept beside the maps (reads no map: no torch on the page that asks)."""
    folder = run.path / HEATMAP_DIR
    known = _read_shares(run)
    cached = {p.name for p in folder.glob("*_ood_*.npz")} if folder.is_dir() else set()
    with_map, on_frame = 0, []
    for index in (int(i) for i in flagged):
        key = cache_name(index, "ood", None)
        if key not in cached or key not in known:
            continue
        with_map += 1
        if known[key] > MOSTLY:
            on_frame.append(index)
    return FrameFlags(len(flagged), with_map, on_frame)
