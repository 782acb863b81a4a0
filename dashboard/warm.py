"""The first visit's cache fills, done before the server answers (``dashboard.launch``).

Streamlit's caches live in the process, so values computed here, before the server listens,
are what the first page finds: the run read, its table, the default detector's thresholds and
score view, the map, the nearest-neighbour spaces, the worklist's first thumbnails, the heatmap
model and the inspector's first sample's heatmaps. A user opening any page first then waits for
drawing, not for these. Nothing here may stop the server: a failure is one line on stderr and
the page computes what it needs as before.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def warm_run(path: Path) -> None:
    """Fill the caches a first visit to any page needs for the run at ``path``."""
    from dashboard import heatmap_jobs, loaders, verdicts
    from nero.run.verdicts import telling_samples

    r = loaders.run(path)
    table = loaders.table(r)
    method = r.default_method
    loaders.method_view(r, method)
    verdicts.thresholds(r, method)
    loaders.embedding(r)
    loaders.neighbour_scale(r)  # fills train_space too
    loaders.frame_only_scores(r)
    scores = table[method].to_numpy(np.float64)
    rows = np.flatnonzero(table["split"].to_numpy() != "id_train")
    worst = rows[np.argsort(-scores[rows], kind="stable")[: loaders.WORKLIST_PAGE_ROWS]]
    for i in worst:
        loaders.thumbnail(str(table["path"].iat[int(i)]), loaders.WORKLIST_THUMB_PX)
    if heatmap_jobs.heatmaps_module() is not None:
        first = int(telling_samples(r, method).get("Most OOD-like image", 0))
        target = int(table["pred"].iat[first])
        # its class and OOD maps and the neuron the inspector shows first, in one pass
        heatmap_jobs.start_heatmaps(r, first, target, heatmap_jobs.default_neuron(r, first))
        heatmap_jobs.heatmaps(r, first, target)


def warm_from_argv(argv: list[str]) -> None:
    """The run the first page opens (``--run`` after ``--``, else the root's first), warmed;
    what it cost, or why it could not, on stderr."""
    from dashboard import state

    args = argv[argv.index("--") + 1 :] if "--" in argv else []
    config = state.parse_config(args)
    runs = state.available_runs(config)
    name = state.default_run(config, runs)
    if name is None:
        return
    started = time.perf_counter()
    try:
        warm_run(runs[name])
    except Exception as exc:  # noqa: BLE001 — the pages compute it themselves then
        print(f"[nero] could not prepare run {name} ahead: {exc}", file=sys.stderr, flush=True)
        return
    print(
        f"[nero] run {name} prepared for the first page in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
