"""Heatmaps for the pages: started in a background thread when a sample is picked, then
collected into the page cache."""

from __future__ import annotations

import functools
import itertools
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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


class Jobs:
    """One worker thread for heatmap work, the page's before what is prepared ahead.

    Heatmaps are torch work that releases the GIL: a sample's maps compute here while the page
    script draws everything else. A job the page waits for (:data:`NOW`) runs before any queued
    job prepared ahead (:data:`AHEAD`), and a job prepared ahead that is no longer wanted when
    its turn comes (the user moved on) is dropped, so the queue follows the user. One thread:
    attribution holds one model, one pass at a time. The thread is a one-worker executor's
    (joined cleanly at exit); each submission asks it to run the most urgent job queued.
    """

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nero-heatmaps")

    def submit(
        self,
        fn: Callable[[], Any],
        priority: int = 0,
        future: Future | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> Future:
        """Queue ``fn`` for a new future, or for ``future`` again at ``priority`` (whichever
        entry comes up first runs it); ``wanted``: asked when its turn comes, False drops it."""
        future = future if future is not None else Future()
        self._queue.put((priority, next(self._order), future, fn, wanted))
        self._pool.submit(self._run_most_urgent)
        return future

    def submit_after(
        self, delay: float, fn: Callable[[], Any], priority: int, wanted: Callable[[], bool]
    ) -> Future:
        """:meth:`submit`, ``delay`` seconds from now; the future exists at once (a page may
        ask for it :data:`NOW` before then)."""
        future: Future = Future()
        timer = threading.Timer(delay, self.submit, (fn, priority, future, wanted))
        timer.daemon = True
        timer.start()
        return future

    def _run_most_urgent(self) -> None:
        _, _, future, fn, wanted = self._queue.get_nowait()  # one entry per call: never empty
        if future.done() or future.running():  # queued twice: the other entry ran it
            return
        leaving = not threading.main_thread().is_alive()  # the process is exiting
        if leaving or (wanted is not None and not wanted()):
            future.cancel()
            return
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 — surfaces where the page collects it
            future.set_exception(exc)


NOW, AHEAD = 0, 1
_WORKER = Jobs()


_STARTED: dict[tuple, Future] = {}


_STARTED_LOCK = threading.Lock()


_MAX_STARTED = 32  # started but never collected (the user moved on): forget the oldest


# Keys whose heatmaps went into the page cache: a rerun of the page (any widget) must not
# start them again. As many as that cache holds.
_COLLECTED: dict[tuple, None] = {}


_MAX_COLLECTED = 256


def _heatmap_pair(run: Run, index: int, target: int | None, neuron: int | None) -> list[Heatmap]:
    """The class and OOD maps of a sample; with ``neuron``, that neuron's map in the same
    batched pass (cached on disk, where the inspector's neuron map then finds it)."""
    wanted = [("class", target), ("ood", None)]
    return service(run).sample(
        index, wanted + ([("neuron", neuron)] if neuron is not None else [])
    )[:2]


def default_neuron(run: Run, index: int) -> int:
    """The neuron the inspector shows first for a sample: the one deviating most from the
    nearest class centroid."""
    features = np.asarray(run.features[index : index + 1], np.float64)
    from dashboard.imaging import most_deviating  # matplotlib: not on the worklist's import path

    deviation = run.detector.explain(features, run.sample_relevance(index)).deviation[0]
    return int(most_deviating(deviation)[0])


def _key(r: Run, index: int, target: int | None) -> tuple:
    return (str(r.path), stamp(r.path), int(index), target)


def start_heatmaps(r: Run, index: int, target: int | None, neuron: int | None = None) -> None:
    """Begin computing a sample's class and OOD heatmaps (and ``neuron``'s) in the background.

    :func:`heatmaps` with the same arguments collects the result (or computes it itself
    when nothing was started). Errors surface there, not here. A sample queued to be prepared
    ahead moves to the front of the queue.
    """
    key = _key(r, index, target)
    job = functools.partial(_heatmap_pair, r, int(index), target, neuron)
    with _STARTED_LOCK:
        if key in _COLLECTED:  # already in the page cache
            return
        started = _live(key)
        if started is None:
            _remember(key, _WORKER.submit(job, NOW))
        elif not (started.running() or started.done()):
            _WORKER.submit(job, NOW, started)


def _live(key: tuple) -> Future | None:
    """The job started for ``key``, unless there is none or it was dropped (forgotten then)."""
    started = _STARTED.get(key)
    if started is not None and started.cancelled():
        del _STARTED[key]
        return None
    return started


def _remember(key: tuple, future: Future) -> None:
    while len(_STARTED) >= _MAX_STARTED:
        _STARTED.pop(next(iter(_STARTED)))
    _STARTED[key] = future


# The samples worth preparing now: those of the latest :func:`prepare_ahead` call (replaced
# whole, so the worker thread reads one set or the other, never a half-made one).
_AHEAD: list[frozenset] = [frozenset()]


# Prepared-ahead work starts this long after the page that asked for it ended: a reviewer reads
# a sample for longer, while a user jumping from sample to sample (who would otherwise wait for
# a map being prepared ahead) has moved on by then, and Streamlit has sent the page's last
# messages (the maps' Python-side hooks hold the GIL).
AHEAD_AFTER_S = 1.0


def _still_ahead(key: tuple) -> bool:
    return key in _AHEAD[0]


def prepare_ahead(r: Run, rows: Sequence[int]) -> None:
    """Compute the maps of the samples a user is likely to open next (the worklist's next
    rows), each with its predicted class and default neuron, behind anything a page waits for;
    what was queued for an earlier sample and has not started is dropped."""
    preds = r.samples["pred"].to_numpy()
    samples = [(int(i), int(preds[int(i)])) for i in rows]
    with _STARTED_LOCK:
        _AHEAD[0] = frozenset(_key(r, index, target) for index, target in samples)
        for index, target in samples:
            key = _key(r, index, target)
            if key in _COLLECTED or _live(key) is not None or _on_disk(r, index, target):
                continue

            def job(index: int = index, target: int = target) -> list[Heatmap]:
                return _heatmap_pair(r, index, target, default_neuron(r, index))

            still = functools.partial(_still_ahead, key)
            _remember(key, _WORKER.submit_after(AHEAD_AFTER_S, job, AHEAD, still))


def prepare_if_loaded(r: Run, rows: Sequence[int]) -> None:
    """:func:`prepare_ahead`, from a page that needs no model itself (the worklist's top rows,
    the map's picked dot): only when the model code is loaded already (``nero dashboard``'s
    launcher loads it before the server answers), so such a page never waits for torch."""
    if "nero.run.heatmaps" in sys.modules and rows:
        prepare_ahead(r, rows)


def _on_disk(r: Run, index: int, target: int | None) -> bool:
    module = heatmaps_module()
    return module is not None and all(
        module.cache_path(r, index, kind, t).is_file()
        for kind, t in (("class", target), ("ood", None))
    )


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
    try:
        heats = started.result() if started is not None else None
    except CancelledError:  # prepared ahead, then dropped: the user came back to it
        heats = None
    if heats is None:
        heats = _heatmap_pair(run, index, target, None)
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
