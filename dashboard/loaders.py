"""Cached reads of a run: every page loads through here, nothing the run holds is recomputed.

Cache keys are the run folder plus a stamp of the files read (their modification times), so
a run rebuilt in place is read again and an unchanged run is read once per server. A value
computed from a run is cached with :func:`run_cached`, which makes that key.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from nero.data.images import ImageReadError, read_image
from nero.detect.metrics import fpr_at_95_tpr_threshold
from nero.run.directory import Run, read_run
from nero.run.embedding import INFO_FILE, load_embedding

THUMB_PX = 160  # thumbnails in grids: enough to recognise the image, small to send
WORKLIST_PAGE_ROWS = 50  # worklist rows with thumbnails per page: quick to draw, enough to work
WORKLIST_THUMB_PX = 96  # each worklist row shows its image at this size (the frame must show)


def interactive_threads(cpus: int | None = None) -> int:
    """Torch threads for one-image work (heatmaps, uploads): half the cores, at most 4.

    One image is too little work to share among many threads; on a busy or small machine
    extra threads spin against each other (measured on 2 shared cores: a ResNet-18 forward
    takes 30 ms on 1 thread and about 1 s on 2).
    """
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


@st.cache_resource(show_spinner=False)
def configure_torch() -> int:
    """Set the server's torch thread count once per process; returns it.

    Called where torch work starts (heatmaps, scoring), not at app start: importing torch
    takes seconds, and the worklist, overview and map never need it.
    """
    import torch

    threads = interactive_threads()
    torch.set_num_threads(threads)
    return threads


WARM_THREAD = "nero-warm-model-code"
# Importing torch holds the GIL for long stretches: started at once, it starved the server
# loop delivering the first page (worklist cold 4.1 s -> 7.9 s in bench/dashboard.py).
WARM_AFTER_S = 4.0


def _import_model_code() -> None:
    try:
        import nero.run.heatmaps  # noqa: F401 — torch, torchvision, zennit
    except Exception:  # noqa: BLE001 — the pages that need it say what failed
        logging.getLogger("nero.dashboard").debug("warming the model code failed", exc_info=True)


@st.cache_resource(show_spinner=False)
def _warm_thread() -> threading.Thread:
    thread = threading.Timer(WARM_AFTER_S, _import_model_code)
    thread.name, thread.daemon = WARM_THREAD, True
    thread.start()
    return thread


def warm_model_code() -> None:
    """Import torch and the heatmap code in the background, a few seconds after the first
    page is drawn (:data:`WARM_AFTER_S`, so that page is delivered first).

    Importing torch takes seconds; no page waits for it, and by the time a user opens a sample
    in the inspector it is usually loaded.
    """
    _warm_thread()


RUN_FILES = ("manifest.json", "scores.csv")  # what a run's cache key stamps by default


def stamp(path: Path, *names: str) -> tuple[int, ...]:
    """Modification times of a run's files (0 for a missing one): part of every cache key."""
    names = names or RUN_FILES
    out = []
    for name in names:
        try:
            out.append((path / name).stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


@st.cache_resource(show_spinner=False, max_entries=8)
def _run(path: str, key: tuple[int, ...]) -> Run:
    return read_run(path)


def run(path: Path) -> Run:
    return _run(str(path), stamp(path))


def run_at(path: str, key: tuple[int, ...]) -> Run:
    """The run of a cache key made by :func:`stamp` (for cached functions keyed by it)."""
    return _run(path, key)


P = ParamSpec("P")
T = TypeVar("T")


def run_cached(
    *files: str, max_entries: int = 8, resource: bool = False, shared: bool = False
) -> Callable[[Callable[Concatenate[Run, P], T]], Callable[Concatenate[Run, P], T]]:
    """Cache a value computed from a run: ``f(run, *args)`` becomes a cached function with
    the same signature, computed once per run folder, state of the run's files and ``args``.

    The cache key is ``(str(run.path), stamp(run.path, *files), *args, **kwargs)``: the
    ``files`` named (default :data:`RUN_FILES`) changing on disk makes a new entry, and the
    ``Run`` object itself is never hashed. The other arguments must be hashable by Streamlit:
    all of them are part of the key when passed positionally (Streamlit leaves a keyword
    argument out when its name starts with "_").

    On a cache miss the body gets the run read again from its folder (:func:`read_run`), or,
    with ``shared``, the pages' own cached run (:func:`run_at`: no second read, and its
    memory-mapped arrays are shared). ``resource`` caches with ``st.cache_resource`` (one
    shared object, not copied per call: for large frames and models; callers must not
    modify it) instead of ``st.cache_data`` (a pickled copy per call). ``max_entries`` bounds
    the entries kept, least recently used dropped first.

    ``f.clear()`` empties the cache. Example::

        @run_cached("manifest.json", "detector.npz")
        def train_space(run: Run) -> np.ndarray:
            return run.detector.project(run.relevance[run.rows("id_train")])
    """
    names = files or RUN_FILES
    cache = st.cache_resource if resource else st.cache_data

    def decorate(fn: Callable[Concatenate[Run, P], T]) -> Callable[Concatenate[Run, P], T]:
        def cached(path: str, key: tuple[int, ...], *args: Any, **kwargs: Any) -> T:
            if not shared:
                found = read_run(path)
            else:  # the key of _run (the shared run) stamps RUN_FILES
                found = run_at(path, key if names == RUN_FILES else stamp(Path(path)))
            return fn(found, *args, **kwargs)

        # Streamlit names a cache by the function's module, qualified name and source: each
        # decorated function gets its own cache, made anew when its source changes.
        cached.__signature__ = inspect.signature(cached)  # type: ignore[attr-defined]
        cached.__module__, cached.__qualname__ = fn.__module__, f"{fn.__qualname__}[cached]"
        cached.__name__, cached.__wrapped__ = fn.__name__, fn  # type: ignore[attr-defined]
        store = cache(show_spinner=False, max_entries=max_entries)(cached)

        @functools.wraps(fn)
        def call(run: Run, *args: P.args, **kwargs: P.kwargs) -> T:
            return store(str(run.path), stamp(run.path, *names), *args, **kwargs)

        call.clear = store.clear  # type: ignore[attr-defined]
        return call

    return decorate


# A resource, not data: one shared frame instead of a copy per call (a 100k-sample table is
# tens of MB to unpickle). Read-only: no view modifies it (they filter and assign copies).
@run_cached(resource=True, max_entries=16)
def table(r: Run) -> pd.DataFrame:
    """samples.csv joined with scores.csv, plus readable set and class columns."""
    table = r.samples.merge(r.scores, on="index", how="left")
    relative = ~table["path"].str.startswith("/")
    if relative.any():  # recorded relative to a run that moved (absolute paths are as is)
        table.loc[relative, "path"] = [str(r.resolve(p)) for p in table["path"][relative]]
    if "mask" in table.columns:
        table["mask"] = [str(r.resolve(m)) if m else "" for m in table["mask"]]
    table["set"] = [s.split(":", 1)[1] if s.startswith("ood:") else s for s in table["split"]]
    names = r.class_names
    table["true class"] = [names[i] if 0 <= i < len(names) else "—" for i in table["label"]]
    table["predicted class"] = [names[i] if 0 <= i < len(names) else "?" for i in table["pred"]]
    table["file"] = table["path"].str.rsplit("/", n=1).str[-1]
    return table


@dataclass(frozen=True)
class MethodView:
    """One method's scores split the way the overview needs them."""

    id_test: np.ndarray
    ood: dict[str, np.ndarray]  # OOD set name → scores
    default_threshold: float  # keeps 95 % of ID test samples (the FPR95 operating point)


def method_view(r: Run, method: str) -> MethodView:
    t = table(r)
    scores = t[method].to_numpy(np.float64)
    id_test = scores[t["split"].to_numpy() == "id_test"]
    ood = {s: scores[t["split"].to_numpy() == f"ood:{s}"] for s in r.ood_sets}
    return MethodView(id_test, ood, fpr_at_95_tpr_threshold(id_test))


@run_cached("manifest.json", INFO_FILE, "detector.npz")
def embedding(r: Run) -> dict[str, Any] | None:
    """The stored 2-D map (points, centroids, method, info), or None when not computed."""
    found = load_embedding(r)
    if found is None:
        return None
    return {
        "points": found.points,
        "centroids": found.centroids,
        "method": found.method,
        "info": found.info,
    }


# Reads no part of the run itself: the pages' own run is passed (no second read).
@run_cached("manifest.json", shared=True)
def frame_only_scores(r: Run) -> pd.DataFrame | None:
    """The acquisition control's scores of frame-only copies (rows: run samples), or None."""
    from nero.run.acquisition import CONTROL_FILE

    file = r.path / CONTROL_FILE
    return pd.read_csv(file).set_index("index") if file.is_file() else None


@run_cached("manifest.json", "detector.npz")
def train_space(r: Run) -> np.ndarray:
    """NERO's PCA projection of the id_train relevance (for nearest-neighbour look-ups)."""
    return r.detector.project(r.relevance[r.rows("id_train")])


@run_cached("manifest.json", "detector.npz")
def review_space(r: Run) -> np.ndarray:
    """NERO's PCA projection of every image but the training ones ("more like this")."""
    from nero.run.scoring import review_rows

    return r.detector.project(r.relevance[review_rows(r)])


@run_cached("manifest.json")
def colour_reference(r: Run):
    """The run's colours of training and normal test images (kept in the run once fitted)."""
    from nero.run.colour_check import colour_reference

    return colour_reference(r)


@run_cached("manifest.json", max_entries=256, shared=True)
def not_endoscopy_like(r: Run, index: int) -> bool | None:
    """Sample ``index``'s colours are unlike every training image's (None: cannot tell)."""
    from nero.run.colour_check import not_endoscopy_like

    return not_endoscopy_like(r, index, colour_reference(r))


@run_cached("manifest.json", "detector.npz")
def neighbour_scale(r: Run):
    """How far normal test images' nearest training images are (what "close" means here)."""
    from nero.run.scoring import neighbour_scale

    return neighbour_scale(r, train_space(r))


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(path: str, px: int = THUMB_PX) -> np.ndarray | None:
    """A small RGB copy of a sample's image, or None when the file cannot be read."""
    try:
        img = read_image(path)
    except ImageReadError:
        return None
    img.thumbnail((px, px))
    return np.asarray(img)


@st.cache_data(show_spinner=False, max_entries=256)
def image(path: str) -> np.ndarray | None:
    """A sample's full image as RGB, or None when the file cannot be read."""
    try:
        return np.asarray(read_image(path))
    except ImageReadError:
        return None


@st.cache_data(show_spinner=False, max_entries=256)
def mask(path: str, size: tuple[int, int]) -> np.ndarray | None:
    """A sample's ground-truth artefact mask (bool, resized to ``size`` = (W, H)), if any."""
    if not path:
        return None
    try:
        with Image.open(path) as m:
            m = m.convert("L").resize(size, Image.NEAREST)
            return np.asarray(m) > 127
    except (OSError, ValueError):
        return None


@st.cache_data(show_spinner=False, max_entries=256)
def mask_edge(path: str, size: tuple[int, int]) -> np.ndarray | None:
    """The border of :func:`mask` at ``size`` (what an outline draws), or None."""
    from dashboard.imaging import edge

    found = mask(path, size) if path else None
    return None if found is None else edge(found)


# ------------------------------------------------------------------ heavier resources
@run_cached(resource=True, max_entries=4)
def _scorer(r: Run, methods: tuple[str, ...] | None):
    from nero.run.scoring import RunScorer

    return RunScorer(r, methods=list(methods) if methods is not None else None)


def scorer(r: Run, methods: tuple[str, ...] | None = ("nero",)):
    """The run's model and detectors ready for new images (NERO only unless asked)."""
    configure_torch()
    return _scorer(r, methods)


def png_bytes(array: np.ndarray) -> bytes:
    """An RGB array as PNG bytes (a download's data: pass ``lambda: png_bytes(a)`` so the
    image is encoded only when the button is clicked)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()
