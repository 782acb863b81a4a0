"""UI pieces every page uses: the config, the open run (or how to get one), the header, errors."""

from __future__ import annotations

import logging
import sys

import streamlit as st

from dashboard import loaders, pages, state
from nero.run.directory import Run, RunFormatError

LOG = logging.getLogger("nero.dashboard")


def config() -> state.Config:
    return state.parse_config(sys.argv[1:])


def current() -> tuple[str, Run] | None:
    """The picked run, loaded from cache; None when there is none (the page explains)."""
    cfg = config()
    runs = state.available_runs(cfg)
    name = st.session_state.get(state.RUN)
    if name not in runs:
        return None
    try:
        return name, loaders.run(runs[name])
    except (RunFormatError, OSError, ValueError, KeyError) as exc:
        st.error(
            f"The run **{name}** cannot be read: {exc}\n\n"
            "What to do: pick another run in the sidebar, or rebuild it with `nero evaluate`."
        )
        st.stop()
    return None


def require_run() -> tuple[str, Run]:
    """The picked run, or a friendly explanation of how to get one (and the page stops)."""
    found = current()
    if found is None:
        st.info(
            "**No run is open yet.** A run is what NERO writes after scoring a model on your "
            "data. Build the synthetic demo from the sidebar, or create a run from your own "
            "checkpoint and image folders."
        )
        st.page_link(
            pages.script("new-run"), label="Create a new run", icon=":material/add_circle:"
        )
        st.stop()
    return found


def header(title: str, question: str) -> None:
    st.title(title)
    st.caption(question)


def page_failed(exc: BaseException) -> None:
    """An error while drawing a page: a message with what to do, never a traceback."""
    LOG.exception("dashboard page failed")
    st.error(
        f"This view could not be drawn: {type(exc).__name__}: {exc}\n\n"
        "What to do: pick another run or sample in the sidebar and try again; if the run was "
        "written by an older version, rebuild it with `nero evaluate`."
    )
