"""Dashboard responsiveness: page open on a cached run, and switching samples in the inspector.

Usage: python bench/dashboard.py [--run runs/demo] [--switches 5] [--browser]

With ``--browser`` it measures what a user meets: ``nero dashboard`` started as a user starts
it, headless Chromium (Playwright) opening every page cold (the first visit after the server
started) and warm (the second visit), and switching the inspector's sample two ways, each timed
until the sample and both its heatmaps are shown (the target) and until the whole page is
complete: jumps to samples whose maps were never computed (their number typed, one after the
other: the worst case, which also waits for any map being prepared ahead), and walks down the
worklist with K after reading each sample for ``READ_S`` seconds (the inspector prepares the
worklist's next rows meanwhile). A page counts as shown when its main content is drawn (the
worklist's table, the overview's chart, the map's points, the inspector's images), nothing on
the page is stale from a previous run of the script and Streamlit's "Running" indicator is
gone.

Without ``--browser`` it runs every page through Streamlit's AppTest in one process (the
server's caches are process-wide, as in ``nero dashboard``): the first open of each page
pays imports and cache fills, the second is what a user opening the page again sees. Then
the inspector switches to samples whose heatmaps were never computed (model forward +
backward for two heatmaps), back to one already seen (the page without heatmap work), and
times the two heatmaps alone. The inspector draws everything else before the heatmaps, so a
switch shows the sample after about the "seen sample" time and the heatmaps when they are
ready. Without --run it builds the small test run in a temporary folder.
Prints seconds, the target and the ratio measured / target (≤ 1 meets it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import results_io  # noqa: E402

from dashboard.pages import KEYS  # noqa: E402

PAGE_OPEN_TARGET_S = 3.0  # a page on a cached run
FIRST_TARGET_S = 3.0  # the first chart (or table, or image) of the first page a user opens
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


# What shows that a page has drawn its main content, in the browser.
SHOWN = {
    "worklist": '[data-testid="stDataFrame"]',
    "overview": '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg',
    "map": '[data-testid="stVegaLiteChart"] .mark-symbol path',
    "inspector": '[data-testid="stImage"] img',
    "score": '[data-testid="stFileUploaderDropzone"]',
    "new-run": '[data-testid="stForm"]:visible, [data-testid="stButton"]:visible',
}
QUIET_JS = """() => {
    const w = document.querySelector('[data-testid="stStatusWidget"]');
    const busy = w && /Running|Stop/.test(w.innerText);
    return !busy && !document.querySelector('[data-testid="stSpinner"]')
        && !document.querySelector('[data-stale="true"]');
}"""


# The inspector's class and OOD heatmaps are drawn for the sample now picked: neither slot still
# says it is computing, and no image on the page is left from the previous sample (stale).
HEATMAPS_SHOWN_JS = """() => {
    if (document.body.innerText.includes('computing the heatmap')) return false;
    if (document.querySelector('[data-stale="true"] [data-testid="stImage"]')) return false;
    return document.querySelectorAll('[data-testid="stImage"] img').length >= 3;
}"""


def shown_after(page, start: float, selector: str) -> tuple[float, float]:
    """Seconds from ``start`` until ``selector`` is drawn (the first content: a chart, the
    table, the images), and until the page is complete and quiet."""
    wait = int(os.environ.get("NERO_BENCH_WAIT_MS", 600_000))
    page.wait_for_selector(selector, timeout=wait)
    first = time.perf_counter() - start
    page.wait_for_function(QUIET_JS, timeout=wait, polling=50)
    return first, time.perf_counter() - start


@contextmanager
def served(run_dir: Path):
    """``nero dashboard RUN`` started as a user starts it; yields its address and the seconds
    until it answered."""
    import subprocess

    from tests.test_dashboard_browser import free_port, stop_group, wait_for_health

    port = free_port()
    nero = Path(sys.executable).with_name("nero")
    cmd = [str(nero), "dashboard", str(run_dir), "--runs-root", str(run_dir.parent)]
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_health(f"http://127.0.0.1:{port}", proc, log)
            yield f"http://127.0.0.1:{port}", time.perf_counter() - start
        finally:
            stop_group(proc)


@contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        page.set_default_timeout(int(os.environ.get("NERO_BENCH_WAIT_MS", 600_000)))
        try:
            yield page
        finally:
            browser.close()


def page_url(base: str, key: str, run_dir: Path, sample: int) -> str:
    from dashboard.pages import DEFAULT

    return f"{base}/{'' if key == DEFAULT else key}?run={run_dir.name}&sample={sample}"


def browser_rows(run_dir: Path, switches: int) -> list[tuple[str, float, float]]:
    """Each page as the first one opened after ``nero dashboard`` started (a fresh server per
    page), every page again (warm), and inspector switches: in headless Chromium."""
    import pandas as pd

    rows: list[tuple[str, float, float]] = []
    fresh = fresh_samples(run_dir, switches)
    with browser_page() as page:
        for key, selector in SHOWN.items():
            with served(run_dir) as (base, started):
                start = time.perf_counter()
                page.goto(page_url(base, key, run_dir, fresh[0]))
                first, complete = shown_after(page, start, selector)
            rows.append((f"first page after start: {key}, first content", first, FIRST_TARGET_S))
            rows.append((f"first page after start: {key}, complete", complete, float("nan")))
            print(f"  {key} first: {first:.2f} s, complete {complete:.2f} s "
                  f"(server answered after {started:.1f} s)", flush=True)  # fmt: skip
        with served(run_dir) as (base, started):
            rows.append(("server answers (nero dashboard started)", started, float("nan")))
            for key, selector in SHOWN.items():  # cold once, then what a user opening it again sees
                page.goto(page_url(base, key, run_dir, fresh[0]))
                shown_after(page, time.perf_counter(), selector)
            for key, selector in SHOWN.items():
                start = time.perf_counter()
                page.goto(page_url(base, key, run_dir, fresh[0]))
                first, complete = shown_after(page, start, selector)
                rows.append((f"open {key} again (warm), complete", complete, FIRST_TARGET_S))
            size = len(pd.read_csv(run_dir / "samples.csv"))
            page.goto(page_url(base, "inspector", run_dir, fresh[0]))
            shown_after(page, time.perf_counter(), SHOWN["inspector"])
            box = page.get_by_label(f"Sample (0 – {size - 1})", exact=True).and_(
                page.locator("input")
            )
            new = [(f"to new sample #{s} (2 heatmaps)", s) for s in fresh[1 : switches + 1]]
            for what, index in [*new, ("back to a seen sample", fresh[1])]:
                box.fill(str(index))
                start = time.perf_counter()
                box.press("Enter")
                rows += switch_rows(page, start, what, to=str(index))
            page.locator("h1").first.click()  # focus off the number box: K is the shortcut
            for step in range(switches):
                time.sleep(READ_S)  # a reviewer reads the sample and its maps first
                before = page.evaluate(SAMPLE_JS)
                start = time.perf_counter()
                page.keyboard.press("k")
                what = f"next in the worklist (K) #{step + 1}"
                rows += switch_rows(page, start, what, away_from=before)
    return rows


# Seconds a reviewer spends on a sample before pressing K: reading the image, the verdict and
# the two heatmaps. The worklist's next rows are prepared while they read.
READ_S = 2.0
SAMPLE_JS = "() => new URLSearchParams(location.search).get('sample')"


def switch_rows(
    page, start: float, what: str, to: str | None = None, away_from: str | None = None
) -> list[tuple[str, float, float]]:
    """A switch timed from ``start``: until the URL names the new sample (``to``, or any other
    than ``away_from``) and its two heatmaps are shown (the target), and until the page is
    complete."""
    if to is not None:
        page.wait_for_function(f"s => ({SAMPLE_JS})() === s", arg=to)
    else:
        page.wait_for_function(f"s => ({SAMPLE_JS})() !== s", arg=away_from)
    page.wait_for_function(HEATMAPS_SHOWN_JS, polling=20)
    shown = time.perf_counter() - start
    _, complete = shown_after(page, start, SHOWN["inspector"])
    return [
        (f"switch {what}: sample and both heatmaps shown", shown, SWITCH_TARGET_S),
        (f"switch {what}: page complete", complete, float("nan")),
    ]


def apptest_rows(run_dir: Path, switches: int) -> list[tuple[str, float, float]]:
    """Every page twice and inspector switches, in Streamlit's AppTest (one process)."""
    os.environ["NERO_RUNS_ROOT"] = str(run_dir.parent)
    os.environ["NERO_RUN"] = str(run_dir)
    samples = fresh_samples(run_dir, switches)

    rows: list[tuple[str, float, float]] = []
    for view in KEYS:
        first = timed(open_page(view, samples[0]))
        second = timed(open_page(view, samples[0]))
        rows.append((f"open {view} (first, cold caches)", first, float("nan")))
        rows.append((f"open {view} (cached run)", second, PAGE_OPEN_TARGET_S))

    at = open_page("inspector", samples[1])
    rows.append(("inspector: first sample (loads the model)", timed(at), float("nan")))
    switch_s = []
    for index in samples[2:]:
        at.number_input[0].set_value(index)
        switch_s.append(timed(at))
    for index, seconds in zip(samples[2:], switch_s, strict=True):
        rows.append((f"switch to new sample #{index} (2 heatmaps)", seconds, SWITCH_TARGET_S))
    at.number_input[0].set_value(samples[2])
    rows.append(("switch back to a seen sample (heatmaps cached)", timed(at), SWITCH_TARGET_S))

    # The same work without Streamlit: the two heatmaps of fresh samples, engine only.
    from nero.run import heatmaps
    from nero.run.directory import read_run

    run = read_run(run_dir)
    engine = []
    for index in fresh_samples(run_dir, switches)[:switches]:
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
    return rows


SWITCH_KINDS = {
    "switch next in the worklist": "switch to the worklist's next sample (K), prepared while "
    f"the reviewer read the last one ({READ_S:.0f} s)",
    "switch to new": "jump to a sample never computed (its number typed)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: a small test run)")
    parser.add_argument("--switches", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="in headless Chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.md")
    parser.add_argument(
        "--section", default="dashboard-speed", help="the README section the result fills"
    )
    args = parser.parse_args()

    if args.run is None:
        from tests.dashboard_fixtures import TINY_RUN, build_tiny_run, make_images

        tmp = Path(tempfile.mkdtemp(prefix="nero-bench-"))
        run_dir = build_tiny_run(make_images(tmp / "data"), tmp / "runs" / TINY_RUN)
    else:
        run_dir = args.run.resolve()
    rows = (browser_rows if args.browser else apptest_rows)(run_dir, args.switches)
    lines = [
        f"Measured by `python bench/dashboard.py{' --browser' if args.browser else ''}` on "
        f"`{run_dir.name}` ({'headless Chromium' if args.browser else 'Streamlit AppTest'}; "
        f"{os.cpu_count()} cores, other work on the machine not controlled).",
        "",
        "| measurement | seconds | target | ratio |",
        "|---|---|---|---|",
    ]
    for name, seconds, target in rows:
        ratio = f"{seconds / target:.2f}" if target == target else "—"
        shown_target = f"{target:.2f}" if target == target else "—"
        lines.append(f"| {name} | {seconds:.3f} | {shown_target} | {ratio} |")
    lines.append("")
    for prefix, words in SWITCH_KINDS.items():
        found = sorted(s for name, s, t in rows if name.startswith(prefix) and t == t)
        if found:
            median = found[len(found) // 2]
            lines.append(
                f"- Median {words} (both heatmaps shown): {median:.3f} s, "
                f"{median / SWITCH_TARGET_S:.2f}× the {SWITCH_TARGET_S} s target."
            )
    print(f"run: {run_dir}")
    print("\n".join(lines))
    if args.browser:
        block = [f"<!-- {args.section} -->", *lines, f"<!-- /{args.section} -->"]
        results_io.write_result(args.out, "\n".join(block))


if __name__ == "__main__":
    main()
