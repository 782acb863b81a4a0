"""``nero score``: score new images or video frames against a run, without refitting."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from nero import DEFAULT_BATCH_SIZE
from nero.commands.flags import check_engine_flags, engine_flags


def add(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser("score", help="score new images against a run, without refitting")
    sc.add_argument("--run", type=Path, required=True, help="a run made by nero evaluate")
    sc.add_argument("inputs", nargs="+", help="image or video files, folders, or glob patterns")
    sc.add_argument("--fps", type=float, default=5.0, help="frames per second taken from videos")
    sc.add_argument("--out", type=Path, help="CSV of one row per image (default: print it)")
    sc.add_argument("--into", metavar="NAME", help="also keep them in the run as batch NAME")
    sc.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    sc.add_argument("--device", default="cpu")
    engine_flags(sc)
    sc.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nero.run.directory import read_run
    from nero.run.new_data import expand_inputs, score_files, verdict_method

    check_engine_flags(args)
    run = read_run(args.run)
    paths = expand_inputs(args.inputs)
    out = args.out
    if out is not None and out.exists():
        raise ValueError(f"--out {out} exists; nero score never replaces a file")
    printing = out is None and args.into is None
    if printing:
        out = Path(tempfile.mkstemp(suffix=".csv")[1])
        out.unlink()
    result = score_files(
        run,
        paths,
        out,
        args.into,
        args.batch_size,
        args.device,
        fps=args.fps,
        engine=args.engine,
        address=args.address,
    )
    if printing:
        print(out.read_text(), end="")
        out.unlink()
    for path, error in result.failures.items():
        print(f"skipped {path}: {error}", file=sys.stderr)
    where = [str(p) for p in (args.out, result.batch) if p is not None]
    print(
        f"scored {result.rows} of {result.attempted} images (verdicts by {verdict_method(run)})"
        + (f"; written to {', '.join(where)}" if where else ""),
        file=sys.stderr if printing else sys.stdout,
    )
    return 0
