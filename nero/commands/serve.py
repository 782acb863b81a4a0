"""The embedded demo and the dashboard: ``nero demo`` and ``nero dashboard``."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from nero.commands.flags import DEFAULT_RUNS_ROOT, print_progress, switch

DEFAULT_PORT = 8501
demo_progress = functools.partial(print_progress, prefix="[demo] ")


def add(sub: argparse._SubParsersAction) -> None:
    dm = sub.add_parser("demo", help="build the embedded synthetic-endoscopy demo run")
    dm.add_argument("--out", type=Path, default=DEFAULT_RUNS_ROOT / "demo")
    switch(dm, "--quick", "a tiny version for tests (< 60 s)")
    dm.set_defaults(handler=demo)

    db = sub.add_parser("dashboard", help="start the Streamlit dashboard on 127.0.0.1")
    db.add_argument("run", nargs="?", type=Path, help="open this run (default: the demo run)")
    db.add_argument("--port", type=int, default=DEFAULT_PORT)
    db.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface to listen on (default: loopback only; see README: exposing the dashboard)",
    )
    db.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name browsers may use besides localhost (needed with --address)",
    )
    switch(
        db,
        "--no-auth",
        "beyond loopback without OIDC sign-in: every page warns, reviews are unverified",
    )
    db.add_argument("--runs-root", type=Path, default=DEFAULT_RUNS_ROOT)
    switch(db, "--no-demo", "do not build the demo run when the runs root has none")
    db.set_defaults(handler=dashboard)


def demo(args: argparse.Namespace) -> int:
    from nero.demo import build_demo, demo_code_paths
    from nero.run.directory import read_run
    from nero.run.report import format_report

    start = time.perf_counter()
    out = build_demo(args.out, quick=args.quick, progress=demo_progress)
    print(format_report(read_run(out), "table"))
    print(f"\ndemo run at {out} ({time.perf_counter() - start:.0f} s); {demo_code_paths(out)}")
    return 0


def dashboard(args: argparse.Namespace) -> int:
    from nero.serve import access_mode, check_exposure, serve_dashboard

    check_exposure(args.address, args.allow_host)
    access_mode(args.address, args.no_auth)  # refused before a demo is built for nobody
    demo = args.runs_root / "demo"
    if args.run is None and not args.no_demo and not (demo / "manifest.json").is_file():
        from nero.demo import build_demo

        print("first start: building the demo run (a few minutes, once)", flush=True)
        build_demo(demo, progress=demo_progress)
    return serve_dashboard(
        args.run, args.runs_root, args.port, args.address, args.allow_host, args.no_auth
    )
