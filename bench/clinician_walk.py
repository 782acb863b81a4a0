"""One clinician task end to end, timed in headless Chromium: worklist → inspect → review →
reopen the link.

    python bench/clinician_walk.py [--run runs/demo]

On a copy of the run (the review it saves never touches the original): ``nero dashboard``
started as a user starts it, then

1. the worklist opened as the first page (its table drawn);
2. its top row clicked: the inspector with the image, verdict and both heatmaps;
3. a review ("Agree", a tag and a note) saved: the confirmation shown, the mark in the run
   with the method, score and verdict on the page;
4. the page's link (the copy-link box) opened in a fresh tab: the same sample, method and
   last review shown.

Writes bench/results/clinician_walk.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import results_io  # noqa: E402

# bench/dashboard.py's server and browser (its name is the dashboard package's: load by path)
_spec = importlib.util.spec_from_file_location("dashboard_bench", ROOT / "bench" / "dashboard.py")
dashboard_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard_bench)
QUIET_JS, browser_page, served = (
    dashboard_bench.QUIET_JS,
    dashboard_bench.browser_page,
    dashboard_bench.served,
)

RESULTS = ROOT / "bench" / "results" / "clinician_walk.md"
TABLE = '[data-testid="stDataFrame"]'
IMAGES = '[data-testid="stImage"] img'


def quiet(page, start: float) -> float:
    page.wait_for_function(QUIET_JS, polling=50)
    return time.perf_counter() - start


def walk(run_dir: Path) -> tuple[list[tuple[str, float]], dict]:
    from nero.run.directory import read_run
    from nero.run.reviews import review_history

    steps: list[tuple[str, float]] = []
    with served(run_dir) as (base, started), browser_page() as page:
        steps.append(("`nero dashboard` answers", started))
        start = time.perf_counter()
        page.goto(f"{base}/?run={run_dir.name}")
        page.wait_for_selector(TABLE)
        steps.append(("1. worklist open (first page), table drawn", quiet(page, start)))

        box = page.locator(TABLE).first.bounding_box()
        start = time.perf_counter()
        page.mouse.click(box["x"] + 12, box["y"] + 36 + 52)  # the top row's selection box
        page.wait_for_selector("h1:has-text('Sample inspector')")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 3"
        )  # the image and its two heatmaps
        steps.append(("2. top row inspected: image, verdict, both heatmaps", quiet(page, start)))
        sample = int(page.url.split("sample=")[1].split("&")[0])

        start = time.perf_counter()
        page.get_by_text("Agree", exact=True).first.click()
        page.get_by_label("Tags (comma-separated, optional)").first.fill("walk")
        page.get_by_label("Note (optional)").first.fill("checked in the walk")
        page.get_by_role("button", name="Save review").click()
        page.wait_for_selector("text=Review saved in the run.")
        steps.append(("3. review saved (confirmation shown)", quiet(page, start)))

        link = page.locator('[data-testid="stCode"] code').first.inner_text().strip()
        fresh = page.context.new_page()
        start = time.perf_counter()
        fresh.goto(link)
        fresh.wait_for_selector("text=Last review by")
        fresh.wait_for_function(
            "() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 3"
        )
        steps.append(
            ("4. the link reopened in a new tab: sample and its review", quiet(fresh, start))
        )
        reopened = fresh.url
    mark = review_history(read_run(run_dir)).iloc[-1]
    facts = {
        "sample": sample,
        "link": link,
        "reopened": reopened,
        "mark": {k: mark[k] for k in ("index", "review", "tags", "note", "method", "verdict")}
        | {"score": float(mark["score"])},
    }
    return steps, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.run / "manifest.json").is_file():
        raise SystemExit(f"{args.run}: no run there (build it with `nero demo`)")
    with tempfile.TemporaryDirectory(prefix="nero-walk-") as tmp:
        copy = Path(tmp) / args.run.name
        shutil.copytree(args.run, copy, ignore=shutil.ignore_patterns("reviews.sqlite*"))
        steps, facts = walk(copy)
    assert facts["mark"]["index"] == facts["sample"] and facts["mark"]["review"] == "agree"
    assert f"sample={facts['sample']}" in facts["reopened"]
    lines = [
        "<!-- clinician-walk -->",
        f"Measured by `python bench/clinician_walk.py` on a copy of `{args.run.name}` "
        "(headless Chromium; 2 cores, other work on the machine not controlled).",
        "",
        "| step | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in steps),
        "",
        f"The mark saved: sample #{facts['sample']}, {facts['mark']['review']} with the verdict "
        f"“{facts['mark']['verdict']}” by {facts['mark']['method']} at score "
        f"{facts['mark']['score']:.4g}, tags “{facts['mark']['tags']}”, note "
        f"“{facts['mark']['note']}”.",
        "<!-- /clinician-walk -->",
    ]
    print("\n".join(lines))
    results_io.write_result(args.out, "# One clinician task, end to end\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
