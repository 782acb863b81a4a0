"""The ``nero`` command line (contract in DESIGN.md): one module per subcommand in
:mod:`nero.commands`; here only the parser they make together and the one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from nero import __version__
from nero.commands import MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nero", description="Explainable out-of-distribution detection (NERO)."
    )
    parser.add_argument("--version", action="version", version=f"nero {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input ends in one line on stderr and exit code 2, never a traceback.

    An unexpected failure (a bug) ends in one line and exit code 1; ``NERO_DEBUG=1`` shows the
    traceback.
    """
    args = build_parser().parse_args(argv)
    format_before = warnings.formatwarning
    warnings.formatwarning = lambda message, *_a, **_k: (
        f"nero {args.command}: warning: {_one_line(message)}\n"
    )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"nero {args.command}: interrupted (computed arrays are kept)", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, LookupError) as exc:
        if os.environ.get("NERO_DEBUG"):
            raise
        print(f"nero {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 — a bug: still one line, not a traceback
        if os.environ.get("NERO_DEBUG"):
            raise
        print(
            f"nero {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(run again with NERO_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.formatwarning = format_before


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
