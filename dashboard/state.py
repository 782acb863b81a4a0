"""Where the dashboard points: the runs root, the picked run and sample, the shareable URL.

Nothing from the URL is ever used as a path: a run name from ``?run=`` is looked up among the
runs found under the runs root (plus the one run named on the command line), and a sample
index is checked against the run's size.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import pages
from nero.run.directory import list_runs
from nero.serve import ACCESS_MODES

DEFAULT_RUNS_ROOT = "runs"
DEMO_RUN = "demo"
# session_state keys shared by every page
RUN = "run_name"
SAMPLE = "sample"
VIEW = "view"
URL_READ = "_url_read"
URL_PROBLEMS = "_url_problems"  # what a link named that is not there, shown to the user


@dataclass(frozen=True)
class Config:
    runs_root: Path
    pinned_run: Path | None  # a run named on the command line (`nero dashboard RUN`)
    access: str = "loopback"  # nero.serve.ACCESS_MODES: who can reach this server, and how


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """``--runs-root``/``--run``/``--access`` after ``--`` on the streamlit command line, else
    the env (``NERO_RUNS_ROOT``, ``NERO_RUN``, ``NERO_ACCESS``)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-root")
    parser.add_argument("--run")
    parser.add_argument("--access", choices=ACCESS_MODES)
    args, _ = parser.parse_known_args(argv)
    root = args.runs_root or os.environ.get("NERO_RUNS_ROOT") or DEFAULT_RUNS_ROOT
    pinned = args.run or os.environ.get("NERO_RUN")
    return Config(
        Path(root).expanduser().resolve(),
        Path(pinned).expanduser().resolve() if pinned else None,
        args.access or os.environ.get("NERO_ACCESS") or "loopback",
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


def method_key(run_name: str) -> str:
    """The session key of a run's chosen method (overview, worklist and links share it)."""
    return f"method::{run_name}"


def active_method(run_name: str, run) -> str:
    """The detector every page shows verdicts, scores and charts with: the one the user chose
    on any page (or a link), else the run's default (its recommendation)."""
    chosen = st.session_state.get(method_key(run_name))
    return chosen if chosen in run.methods else run.default_method


def ood_set_key(run_name: str) -> str:
    return f"ood-set::{run_name}"


ALL_SETS = "__all__"


def read_url(config: Config, runs: dict[str, Path]) -> str | None:
    """On a session's first script run, take the link's run, sample, method, threshold and
    OOD set into the session; anything the link names that is not there becomes a visible
    message (:data:`URL_PROBLEMS`), never a silent switch to something else.

    Returns the page a legacy ``?view=`` link asks for (else ``None``: the URL path decides).
    """
    ss = st.session_state
    if ss.get(URL_READ):
        return None
    ss[URL_READ] = True
    params = st.query_params
    problems: list[str] = []
    name = params.get("run")
    fallback = default_run(config, runs)
    if name is not None and name not in runs:
        problems.append(
            f"The link names the run “{name}”, which is not here; showing "
            + (f"“{fallback}” instead." if fallback else "no run.")
            + (
                " The link's sample and settings belong to that run and are not applied."
                if len(params) > 1
                else ""
            )
        )
        ss[RUN] = fallback
        ss[URL_PROBLEMS] = problems
        return None
    ss[RUN] = name or fallback
    run = _link_run(runs, ss[RUN])
    sample = params.get("sample")
    if sample is not None:
        size = len(run.samples) if run is not None else 0
        if sample.isascii() and sample.isdigit() and int(sample) < size:  # not '²', not '-1'
            ss[SAMPLE] = int(sample)
        else:
            problems.append(
                f"The link's sample “{sample}” is not a sample of run “{ss[RUN]}” "
                f"(0 – {size - 1}); nothing is selected."
            )
    method = params.get("method")
    if method is not None and run is not None:
        method = _take_listed(
            method_key(ss[RUN]),
            method,
            run.methods,
            f"The link's method “{method}” is not in this run; the default is used.",
            problems,
        )
    threshold = params.get("threshold")
    if threshold is not None and run is not None:
        try:
            value = float(threshold)
            if not math.isfinite(value):
                raise ValueError(threshold)
        except ValueError:
            problems.append(f"The link's threshold “{threshold}” is not a number; ignored.")
        else:
            chosen = method or ss.get(method_key(ss[RUN]))
            if chosen is not None:
                ss[threshold_key(ss[RUN], chosen)] = value
    ood_set = params.get("set")
    if ood_set is not None and run is not None:
        _take_listed(
            ood_set_key(ss[RUN]),
            ood_set,
            run.ood_sets,
            f"The link's OOD set “{ood_set}” is not in this run; all sets are shown.",
            problems,
        )
    ss[URL_PROBLEMS] = problems
    view = params.get("view")
    return view if view in pages.KEYS else None


def _take_listed(
    key: str, value: str, allowed: Sequence[str], problem: str, problems: list[str]
) -> str | None:
    """A link's ``value`` into session key ``key`` when ``allowed`` holds it; else
    ``problem`` is added to ``problems``. Returns the value taken, or None."""
    if value in allowed:
        st.session_state[key] = value
        return value
    problems.append(problem)
    return None


def _link_run(runs: dict[str, Path], name: str | None):
    """The run a link names, read (cached) to check the link against it; None if unreadable."""
    from dashboard import loaders

    if name not in runs:
        return None
    try:
        return loaders.run(runs[name])
    except (OSError, ValueError):
        return None


def url_params() -> dict[str, str]:
    """The query string of what the user is looking at: run, sample, method, threshold, set."""
    ss = st.session_state
    name = ss.get(RUN)
    method = ss.get(method_key(name)) if name else None
    threshold = ss.get(threshold_key(name, method)) if method else None
    ood_set = ss.get(ood_set_key(name)) if name else None
    wanted = {
        "run": name,
        "sample": ss.get(SAMPLE),
        "method": method,
        "threshold": f"{threshold:.6g}" if threshold is not None else None,
        "set": ood_set if ood_set not in (None, ALL_SETS) else None,
    }
    return {k: str(v) for k, v in wanted.items() if v is not None}


def share_link() -> str:
    """The address of this view (page, run, sample, method, threshold, set), to copy."""
    from urllib.parse import urlencode

    try:
        page = (st.context.url or "").split("?", 1)[0]
    except Exception:  # noqa: BLE001 — no browser context (tests, scripts): a relative link
        page = ""
    return f"{page}?{urlencode(url_params())}"


def write_url() -> None:
    """Mirror the view's state into the query string so the address can be shared."""
    wanted = url_params()
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


def worklist_key(run_name: str) -> str:
    """The session key of the worklist's current order (what next / previous walk through)."""
    return f"worklist-order::{run_name}"


def worklist_order(run_name: str, run, scores) -> list[int]:
    """The samples in the worklist's order: as the worklist last showed them (its filters),
    else every image but the training ones, most unusual first by the active detector."""
    order = st.session_state.get(worklist_key(run_name))
    if order:
        return list(order)
    rows = np.flatnonzero(run.samples["split"].to_numpy() != "id_train")
    return rows[np.argsort(-np.asarray(scores)[rows], kind="stable")].tolist()


def step_sample(order: list[int], current: int, step: int) -> None:
    """Move to the sample ``step`` places from ``current`` in ``order`` (it wraps around;
    a sample not in the order starts from its first)."""
    if not order:
        return
    at = order.index(current) if current in order else -1 if step > 0 else 0
    pick_sample(order[(at + step) % len(order)])


def neighbours_in(order: list[int], current: int, after: int = 2, before: int = 1) -> list[int]:
    """The samples K and J lead to from ``current`` in ``order``: the next ``after`` ones,
    then the ``before`` previous ones, wrapping around as :func:`step_sample` does."""
    if not order:
        return []
    n = len(order)
    at = order.index(current) if current in order else None
    ahead = [order[((-1 if at is None else at) + s) % n] for s in range(1, after + 1)]
    back = [order[((0 if at is None else at) - s) % n] for s in range(1, before + 1)]
    return [j for j in dict.fromkeys(ahead + back) if j != current]


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
