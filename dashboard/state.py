"""Where the dashboard points: the runs root, the picked run and sample, the shareable URL.

Nothing from the URL is ever used as a path: a run name from ``?run=`` is looked up among the
runs found under the runs root (plus the one run named on the command line), and a sample
index is checked against the run's size.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dashboard import pages
from nero.run.directory import list_runs

DEFAULT_RUNS_ROOT = "runs"
DEMO_RUN = "demo"
# session_state keys shared by every page
RUN = "run_name"
SAMPLE = "sample"
VIEW = "view"
URL_READ = "_url_read"
INITIAL_VIEW = "_initial_view"  # the ?view= of the session's first request: the default page


@dataclass(frozen=True)
class Config:
    runs_root: Path
    pinned_run: Path | None  # a run named on the command line (`nero dashboard RUN`)


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """``--runs-root``/``--run`` after ``--`` on the streamlit command line, else the env."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-root")
    parser.add_argument("--run")
    args, _ = parser.parse_known_args(argv)
    root = args.runs_root or os.environ.get("NERO_RUNS_ROOT") or DEFAULT_RUNS_ROOT
    pinned = args.run or os.environ.get("NERO_RUN")
    return Config(
        Path(root).expanduser().resolve(), Path(pinned).expanduser().resolve() if pinned else None
    )


def available_runs(config: Config) -> dict[str, Path]:
    """Run name → folder: the demo first, then the others; a pinned run outside the root too."""
    runs = {p.name: p for p in list_runs(config.runs_root)}
    pinned = config.pinned_run
    if pinned is not None and pinned.is_dir() and pinned not in runs.values():
        name = pinned.name if pinned.name not in runs else f"{pinned.name} (command line)"
        runs = {name: pinned, **runs}
    return runs


def default_run(config: Config, runs: dict[str, Path]) -> str | None:
    if config.pinned_run is not None:
        for name, path in runs.items():
            if path == config.pinned_run:
                return name
    return next(iter(runs), None)


def read_url(config: Config, runs: dict[str, Path]) -> str | None:
    """On a session's first script run, take run, sample and view from the query string.

    Returns the view asked for (a key of :data:`dashboard.pages.KEYS`) or ``None``.
    """
    ss = st.session_state
    if ss.get(URL_READ):
        return ss.get(INITIAL_VIEW)
    ss[URL_READ] = True
    params = st.query_params
    name = params.get("run")
    ss[RUN] = name if name in runs else default_run(config, runs)
    sample = params.get("sample")
    if sample is not None and sample.isdigit():
        ss[SAMPLE] = int(sample)
    view = params.get("view")
    ss[INITIAL_VIEW] = view if view in pages.KEYS else None
    return ss[INITIAL_VIEW]


def url_params(view: str) -> dict[str, str]:
    """The query string of ``view`` for the current run and sample."""
    ss = st.session_state
    wanted = {"run": ss.get(RUN), "view": view, "sample": ss.get(SAMPLE)}
    return {k: str(v) for k, v in wanted.items() if v is not None}


def write_url(view: str) -> None:
    """Mirror run, view and sample into the query string so the address can be shared."""
    wanted = url_params(view)
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


PENDING_RUN = "_pending_run"
FLASH = "_flash"


def switch_run(name: str, message: str | None = None) -> None:
    """Open run ``name`` on the next script run (the run picker may already be drawn now)."""
    st.session_state[PENDING_RUN] = name
    if message:
        st.session_state[FLASH] = message


def apply_pending_run(runs: dict[str, Path]) -> None:
    """Before the run picker is drawn: take a run asked for by :func:`switch_run`."""
    name = st.session_state.pop(PENDING_RUN, None)
    if name in runs:
        st.session_state[RUN] = name
        st.session_state.pop(SAMPLE, None)


def pick_sample(index: int) -> None:
    """Make ``index`` the sample every view shows (inspector, map ring, links)."""
    st.session_state[SAMPLE] = int(index)


def picked_sample(n_samples: int) -> int | None:
    value = st.session_state.get(SAMPLE)
    if value is None or not 0 <= int(value) < n_samples:
        return None
    return int(value)


def threshold_key(run_name: str, method: str) -> str:
    """The session key of a method's threshold slider; other pages read the same value."""
    return f"threshold::{run_name}::{method}"


def persistent_widget(key: str, default) -> tuple[str, dict]:
    """A widget key whose value survives visits to other pages.

    Streamlit forgets a widget's state once a page without it runs; the value is kept under
    ``key`` and copied into the widget key before the widget is drawn. Returns the widget key
    and the ``on_change`` arguments to pass to the widget.
    """
    ss = st.session_state
    widget_key = f"_w::{key}"
    if key not in ss:
        ss[key] = default
    ss[widget_key] = ss[key]

    def keep() -> None:
        ss[key] = ss[widget_key]

    return widget_key, {"on_change": keep}
