"""Heatmaps for the pages: started in a background thread when a sample is picked, then
collected into the page cache."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from dashboard import loaders
from dashboard.loaders import stamp
from nero.run.directory import Run

if TYPE_CHECKING:  # the module itself is imported on first use (heatmaps_module)
    from nero.explain.attribution import Heatmap
    from nero.run.heatmaps import RunHeatmaps


def heatmaps_module():
    """``nero.run.heatmaps`` when it can be imported, else None (the views say so)."""
    loaders.configure_torch()  # before any heatmap work, once per process
    try:  # imported on first use: torch and zennit would slow the first page down
        from nero.run import heatmaps
    except ImportError:
        return None
    return heatmaps


def service(run: Run) -> RunHeatmaps:
    """The run's :class:`nero.run.heatmaps.RunHeatmaps` (model and envelope loaded once)."""
    module = heatmaps_module()
    if module is None:
        raise RuntimeError("heatmaps are unavailable in this installation")
    return module.heatmaps_of(run)


def fields(service: RunHeatmaps, heats: list[Heatmap]) -> dict[str, dict[str, Any]]:
    """Each map's view as plain, cacheable fields, by kind (the CLI prints the same views)."""
    return {view.kind: view.fields() for view in service.views(heats)}


# Heatmaps are torch work that releases the GIL: started in this one worker thread when a
# sample is picked, they compute while the page script draws everything else.
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nero-heatmaps")


_STARTED: dict[tuple, Future] = {}


_STARTED_LOCK = threading.Lock()


_MAX_STARTED = 32  # started but never collected (the user moved on): forget the oldest


# Keys whose heatmaps went into the page cache: a rerun of the page (any widget) must not
# start them again. As many as that cache holds.
_COLLECTED: dict[tuple, None] = {}


_MAX_COLLECTED = 256


def _heatmap_pair(run: Run, index: int, target: int | None) -> list[Heatmap]:
    return service(run).sample(index, [("class", target), ("ood", None)])


def start_heatmaps(r: Run, index: int, target: int | None) -> None:
    """Begin computing a sample's class and OOD heatmaps in the background.

    :func:`heatmaps` with the same arguments collects the result (or computes it itself
    when nothing was started). Errors surface there, not here.
    """
    key = (str(r.path), stamp(r.path), int(index), target)
    with _STARTED_LOCK:
        if key in _STARTED or key in _COLLECTED:  # running, or already in the page cache
            return
        while len(_STARTED) >= _MAX_STARTED:
            _STARTED.pop(next(iter(_STARTED)))
        _STARTED[key] = _WORKER.submit(_heatmap_pair, r, int(index), target)


@st.cache_data(show_spinner=False, max_entries=256)
def _heatmaps(
    path: str, key: tuple[int, ...], index: int, target: int | None
) -> dict[str, dict[str, Any]]:
    with _STARTED_LOCK:
        started = _STARTED.pop((path, key, index, target), None)
        _COLLECTED[(path, key, index, target)] = None
        while len(_COLLECTED) > _MAX_COLLECTED:
            _COLLECTED.pop(next(iter(_COLLECTED)))
    run = loaders.run(Path(path))
    heats = started.result() if started is not None else _heatmap_pair(run, index, target)
    return fields(service(run), heats)


def heatmaps(r: Run, index: int, target: int | None = None) -> dict[str, dict[str, Any]]:
    """Class (of ``target``, default predicted) and OOD heatmap of one run sample, cached."""
    return _heatmaps(str(r.path), stamp(r.path), int(index), target)


@st.cache_data(show_spinner=False, max_entries=64)
def image_heatmaps(
    run_key: str, image_key: str, _image, _relevance, target: int | None
) -> dict[str, dict[str, Any]]:
    """Class and OOD heatmap of an uploaded image with the run's model, in one pass.

    Keys: run folder, image hash and the class target; ``_relevance``: the image's
    relevance row as the run's scorer computed it (it sets the OOD map's starting point).
    """
    owner: RunHeatmaps = service(loaders.run(Path(run_key)))
    return fields(owner, owner.image(_image, _relevance, [("class", target), ("ood", None)]))


@loaders.run_cached(max_entries=256, shared=True)
def neuron_heatmap(r: Run, index: int, neuron: int) -> dict[str, Any]:
    """Where one penultimate neuron fires in a run sample (its conditional heatmap), cached."""
    owner = service(r)
    return fields(owner, owner.sample(int(index), [("neuron", int(neuron))]))["neuron"]
