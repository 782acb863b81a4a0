"""A score read as a verdict, in the same three states and colours on every page.

The thresholds come from the engine (:mod:`nero.run.verdicts`), calibrated on the run's
normal test images, and are said in words: "flags 5 % / 1 % of normal images".
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import loaders
from nero.run.directory import Run
from nero.run.verdicts import (
    BORDERLINE,
    BORDERLINE_FLAGS,
    IN_DISTRIBUTION,
    OOD_FLAGS,
    OUT_OF_DISTRIBUTION,
    Thresholds,
)

# One colour, icon and phrase per verdict, everywhere (badges, tables, charts).
STYLE = {
    IN_DISTRIBUTION: ("green", ":material/check_circle:", "Looks in-distribution"),
    BORDERLINE: ("orange", ":material/help:", "Borderline"),
    OUT_OF_DISTRIBUTION: ("red", ":material/warning:", "Out-of-distribution"),
}
COLOURS = {IN_DISTRIBUTION: "#2E7D32", BORDERLINE: "#EF8F00", OUT_OF_DISTRIBUTION: "#C62828"}
DOTS = {IN_DISTRIBUTION: "🟢", BORDERLINE: "🟠", OUT_OF_DISTRIBUTION: "🔴"}  # for tables


@loaders.run_cached(max_entries=32, shared=True)
def thresholds(r: Run, method: str) -> Thresholds:
    """The method's thresholds, calibrated on the run's ID test images (cached)."""
    from nero.run.verdicts import run_thresholds

    return run_thresholds(r, method)


def verdict_of(score: float, thr: Thresholds) -> str:
    return str(thr.verdict(np.asarray([score]))[0])


def phrase(score: float, thr: Thresholds) -> str:
    """The verdict as words a person reads: "Borderline", …"""
    return STYLE[verdict_of(score, thr)][2]


def rule_in_words(thr: Thresholds) -> str:
    return (
        f"Borderline above {thr.borderline:.4g} (a score only {BORDERLINE_FLAGS:.0%} of normal "
        f"test images exceed), out-of-distribution above {thr.ood:.4g} "
        f"({OOD_FLAGS:.0%} of normal images exceed it)."
    )


def verdict_badge(score: float, thr: Thresholds, by: str | None = None) -> None:
    """The verdict in its colour (``by``: the detector's name, said with it), how unusual the
    score is among normal images, and the rule."""
    colour, icon, words = STYLE[verdict_of(score, thr)]
    share = float(thr.percentile(np.asarray([score]))[0])
    named = f" — by {by}, score {score:.4g}" if by else ""
    st.markdown(f":{colour}-background[{icon} **{words}**]{named}")
    st.caption(f"Scores higher than {share:.0f} % of normal test images. {rule_in_words(thr)}")
