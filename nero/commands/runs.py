"""Commands on existing runs: ``nero runs``, ``rebind``, ``report``, ``reviews``."""

from __future__ import annotations

import argparse
from pathlib import Path

from nero.commands.flags import DEFAULT_RUNS_ROOT, switch
from nero.run.report import REPORT_FORMATS

CLEAN = "remove the abandoned .incomplete folders (never one a process is writing)"
DIFFERENT_WEIGHTS = (
    "accept a checkpoint whose weights differ from the run's (recorded as a warning)"
)


def add(sub: argparse._SubParsersAction) -> None:
    rn = sub.add_parser("runs", help="list the runs and abandoned .incomplete folders in a folder")
    rn.add_argument("root", nargs="?", type=Path, default=DEFAULT_RUNS_ROOT)
    switch(rn, "--clean", CLEAN)
    rn.set_defaults(handler=list_runs)

    rb = sub.add_parser("rebind", help="point a run at its model file after the file moved")
    rb.add_argument("run", type=Path)
    rb.add_argument("--model", type=Path, required=True)
    switch(rb, "--different-weights", DIFFERENT_WEIGHTS)
    rb.set_defaults(handler=rebind)

    rp = sub.add_parser("report", help="print the comparison of all methods in a run")
    rp.add_argument("run", type=Path)
    rp.add_argument("--format", choices=REPORT_FORMATS, default=REPORT_FORMATS[0])
    rp.set_defaults(handler=report)

    rv = sub.add_parser("reviews", help="export a run's review history as CSV")
    rv.add_argument("run", type=Path)
    rv.add_argument("--out", type=Path, help="write the CSV here (default: print it)")
    rv.set_defaults(handler=reviews)


def list_runs(args: argparse.Namespace) -> int:
    from nero.run.directory import list_runs, read_run

    for path in list_runs(args.root):
        try:
            run = read_run(path)
            print(
                f"{path.name:30s} {run.manifest['model']['arch']:16s} {len(run.samples):7d} "
                f"samples  {run.manifest.get('created', '?')}"
            )
        except ValueError as exc:
            print(f"{path.name:30s} unreadable: {exc}")
    _list_stages(args.root, args.clean)
    return 0


def _list_stages(root: Path, clean: bool) -> None:
    from nero.run.staging import OutputError, RunLockedError, abandoned_stages, remove_stage

    stages = abandoned_stages(root)
    for stage in stages:
        state = "being written now" if stage.locked else "abandoned"
        line = f"{stage.path.name:30s} {state}, {stage.size_bytes / 2**20:.1f} MiB"
        if clean and not stage.locked:
            try:
                remove_stage(stage)
                line += " — removed"
            except (OutputError, RunLockedError) as exc:
                line += f" — left in place: {exc}"
        print(line)
    if stages and not clean:
        print("(nero runs --clean removes the abandoned .incomplete folders)")


def rebind(args: argparse.Namespace) -> int:
    from nero.run.checkpoint import rebind_model

    print(rebind_model(args.run, args.model, args.different_weights))
    return 0


def report(args: argparse.Namespace) -> int:
    from nero.run.directory import read_run
    from nero.run.report import format_report

    print(format_report(read_run(args.run), args.format))
    return 0


def reviews(args: argparse.Namespace) -> int:
    from nero.files import write_text
    from nero.run.directory import read_run
    from nero.run.reviews import reviews_csv

    text = reviews_csv(read_run(args.run))
    if args.out is None:
        print(text, end="")
    else:
        write_text(args.out, text)
    return 0
