"""Dashboard responsiveness: page open on a cached run, and switching samples in the inspector.

Usage: python bench/dashboard.py [--run runs/demo] [--switches 5]

Runs every page through Streamlit's AppTest in one process (the server's caches are
process-wide, as in ``nero dashboard``): the first open of each page pays imports and cache
fills, the second is what a user opening the page again sees. Then the inspector switches to
samples whose heatmaps were never computed (model forward + backward for two heatmaps), back
to one already seen (the page without heatmap work), and times the two heatmaps alone. The
inspector draws everything else before the heatmaps, so a switch shows the sample after
about the "seen sample" time and the heatmaps when they are ready. Without --run it builds
the small test run in a temporary folder.
Prints seconds, the target and the ratio measured / target (≤ 1 meets it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard.pages import KEYS  # noqa: E402

PAGE_OPEN_TARGET_S = 3.0  # a page on a cached run
SWITCH_TARGET_S = 0.5  # a new sample with both heatmaps, after the first


def timed(at, **kwargs) -> float:
    start = time.perf_counter()
    at.run(**kwargs)
    elapsed = time.perf_counter() - start
    if at.exception:
        raise SystemExit(f"the page raised: {[e.value for e in at.exception]}")
    return elapsed


def open_page(view: str, sample: int | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    at.query_params["view"] = view
    if sample is not None:
        at.query_params["sample"] = str(sample)
    return at


def fresh_samples(run_dir: Path, count: int) -> list[int]:
    """Test/OOD samples without cached heatmaps (so each switch computes two)."""
    import pandas as pd

    samples = pd.read_csv(run_dir / "samples.csv")
    rows = samples.index[samples["split"] != "id_train"].tolist()
    cache = run_dir / "heatmaps"
    fresh = [i for i in rows if not list(cache.glob(f"{i}_*"))] if cache.is_dir() else rows
    if len(fresh) < count + 2:
        raise SystemExit(f"{run_dir} has too few samples without cached heatmaps")
    step = max(1, len(fresh) // (count + 2))
    return fresh[::step][: count + 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: a small test run)")
    parser.add_argument("--switches", type=int, default=5)
    args = parser.parse_args()

    if args.run is None:
        from tests.dashboard_fixtures import TINY_RUN, build_tiny_run, make_images

        tmp = Path(tempfile.mkdtemp(prefix="nero-bench-"))
        run_dir = build_tiny_run(make_images(tmp / "data"), tmp / "runs" / TINY_RUN)
    else:
        run_dir = args.run.resolve()
    os.environ["NERO_RUNS_ROOT"] = str(run_dir.parent)
    os.environ["NERO_RUN"] = str(run_dir)
    samples = fresh_samples(run_dir, args.switches)

    rows: list[tuple[str, float, float]] = []
    for view in KEYS:
        first = timed(open_page(view, samples[0]))
        second = timed(open_page(view, samples[0]))
        rows.append((f"open {view} (first, cold caches)", first, float("nan")))
        rows.append((f"open {view} (cached run)", second, PAGE_OPEN_TARGET_S))

    at = open_page("inspector", samples[1])
    rows.append(("inspector: first sample (loads the model)", timed(at), float("nan")))
    switches = []
    for index in samples[2:]:
        at.number_input[0].set_value(index)
        switches.append(timed(at))
    for index, seconds in zip(samples[2:], switches, strict=True):
        rows.append((f"switch to new sample #{index} (2 heatmaps)", seconds, SWITCH_TARGET_S))
    at.number_input[0].set_value(samples[2])
    rows.append(("switch back to a seen sample (heatmaps cached)", timed(at), SWITCH_TARGET_S))

    # The same work without Streamlit: the two heatmaps of fresh samples, engine only.
    from nero.run import heatmaps
    from nero.run.directory import read_run

    run = read_run(run_dir)
    engine = []
    for index in fresh_samples(run_dir, args.switches)[: args.switches]:
        start = time.perf_counter()
        heatmaps.run_heatmaps(run, index, [("class", None), ("ood", None)])
        engine.append(time.perf_counter() - start)
    rows.append(
        (
            "engine only: class + OOD heatmap (median)",
            sorted(engine)[len(engine) // 2],
            float("nan"),
        )
    )

    print(f"run: {run_dir}")
    print(f"{'measurement':52} {'seconds':>8} {'target':>7} {'ratio':>6}")
    for name, seconds, target in rows:
        ratio = seconds / target if target == target else float("nan")
        shown_target = f"{target:7.2f}" if target == target else "      —"
        shown_ratio = f"{ratio:6.2f}" if ratio == ratio else "     —"
        print(f"{name:52} {seconds:8.3f} {shown_target} {shown_ratio}")
    print(
        f"median switch to a new sample: {sorted(switches)[len(switches) // 2]:.3f} s "
        f"(target {SWITCH_TARGET_S} s)"
    )


if __name__ == "__main__":
    main()
