"""Flags and argument types more than one subcommand takes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nero.model.extract import ENGINES

DEFAULT_RUNS_ROOT = Path("runs")


def ood_pair(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--ood expects NAME=DIR, got {text!r}")
    return name, folder


def nero_param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--nero-param expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def switch(parser: argparse.ArgumentParser, flag: str, words: str) -> None:
    """An on/off flag, off unless given."""
    parser.add_argument(flag, action="store_true", help=words)


def engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=ENGINES[0],
        help="where the forward pass runs: this process, or Ray Data actors (docs/SCALING.md)",
    )
    parser.add_argument(
        "--address",
        help="the Ray cluster to join, e.g. 'auto' or ray://host:10001 (default: start a "
        "local one); only with --engine ray",
    )


def check_engine_flags(args: argparse.Namespace) -> None:
    if args.address is not None and args.engine != "ray":
        raise ValueError("--address names a Ray cluster: it needs --engine ray")
    if args.engine == "ray":
        from nero.model.ray_engine import check_address

        check_address(args.address)


def print_progress(message: str, _fraction: float | None = None, prefix: str = "") -> None:
    print(f"{prefix}{message}", flush=True)
