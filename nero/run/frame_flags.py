"""How many of a run's flags rest mostly on the frame: a run-level count for the dashboard.

A flag whose OOD heatmap puts most of its evidence on the frame (the unlit surround, burnt-in
text, markers; :mod:`nero.explain.field_of_view`) says more about how the frame was recorded
than about the patient. Heatmaps cost a backward pass each, so only the flags whose OOD map
has already been computed (``RUN/heatmaps/``, by the inspector or ``nero heatmap``) are
counted, and the count says how many that is. Each map's frame share is kept in
``RUN/heatmaps/frame_shares.json`` (keyed by the cached map's file name, which carries the
heatmap cache's version), so a page reads a map and its image once, ever.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nero.data.images import ImageReadError, read_image
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


def _share(run: Run, index: int) -> float | None:
    """The frame share of sample ``index``'s cached OOD map (None: no map, or unreadable)."""
    from nero.explain.attribution import Heatmap  # torch: only when a new map is read

    path = run.path / HEATMAP_DIR / cache_name(index, "ood", None)
    try:
        heat = Heatmap.load(path)
        image = np.asarray(read_image(run.sample_path(index)))
    except (OSError, ValueError, KeyError, TypeError, ImageReadError):
        return None
    share = frame_share(heat.original(), image)
    return share.frame if share.has_frame else 0.0


def frame_flags(run: Run, flagged: Sequence[int]) -> FrameFlags:
    """Count the flags (rows of ``flagged``) whose cached OOD map lies mostly on the frame."""
    folder = run.path / HEATMAP_DIR
    store = folder / SHARES_FILE
    try:
        known = json.loads(store.read_text()) if store.is_file() else {}
    except (OSError, ValueError):
        known = {}  # a damaged record is rebuilt from the maps themselves
    cached = {p.name for p in folder.glob("*_ood_*.npz")} if folder.is_dir() else set()
    changed, with_map, on_frame = False, 0, []
    for index in (int(i) for i in flagged):
        key = cache_name(index, "ood", None)
        if key not in cached:
            continue
        if key not in known:
            share = _share(run, index)
            if share is None:
                continue
            known[key], changed = round(share, 4), True
        with_map += 1
        if known[key] > MOSTLY:
            on_frame.append(index)
    if changed:
        try:
            write_json(store, known)
        except OSError as exc:  # a read-only run still gets its count
            warnings.warn(f"could not keep the frame shares in {store}: {exc}", stacklevel=2)
    return FrameFlags(len(flagged), with_map, on_frame)
