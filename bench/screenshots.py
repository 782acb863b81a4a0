"""The README's screenshots of every page, taken on the demo run in headless Chromium.

    python bench/screenshots.py [--run runs/demo] [--out assets]

Runs the browser tests that visit every page (tests/test_dashboard_browser.py) against the
given run, with their screenshots written to ``--out`` (the README shows ``assets/``): the
worklist, overview, relevance map, inspector, score and new-run pages, each the whole page at
1440 px wide. The tests that would write into the run (reviews) skip themselves.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = (
    "test_every_page_renders_and_a_map_click_opens_the_inspector",
    "test_worklist_filters_and_opens_a_row_and_links_fail_visibly",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--out", type=Path, default=ROOT / "assets")
    args = parser.parse_args()
    run = args.run.resolve()
    if not (run / "manifest.json").is_file():
        raise SystemExit(f"{run}: no run there (build it with `nero demo`)")
    env = {
        **os.environ,
        "NERO_SCREENSHOT_ROOT": str(run.parent),
        "NERO_SCREENSHOT_RUN": run.name,
        "NERO_SCREENSHOT_DIR": str(args.out.resolve()),
    }
    selected = " or ".join(TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/test_dashboard_browser.py", "-k", selected],
        cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    for shot in sorted(args.out.glob("screenshot_*.png")):
        print(f"{shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}: "
              f"{shot.stat().st_size // 1024} KiB")  # fmt: skip
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
