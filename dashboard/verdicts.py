"""A score read as a verdict: percentile among normal images, threshold, badge."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import loaders, state
from nero.run.directory import Run


def percentile(value: float, reference: np.ndarray) -> float:
    """Share (%) of reference scores at or below ``value``."""
    reference = np.asarray(reference)
    return float(100.0 * np.mean(reference <= value)) if reference.size else float("nan")


def verdict(score: float, threshold: float) -> str:
    return "flagged as out-of-distribution" if score > threshold else "looks in-distribution"


def verdict_badge(score: float, threshold: float) -> None:
    """The verdict at the threshold, in colour (not an error box: it is a result)."""
    if score > threshold:
        st.markdown(
            f":red-background[:material/warning: **Flagged as out-of-distribution**]  \n"
            f"score {score:.4g} > threshold {threshold:.4g}"
        )
    else:
        st.markdown(
            f":green-background[:material/check_circle: **Looks in-distribution**]  \n"
            f"score {score:.4g} ≤ threshold {threshold:.4g}"
        )


def nero_threshold(run_name: str, r: Run) -> float:
    """The NERO threshold set on the overview (default: keeps 95 % of ID test)."""
    default = loaders.method_view(r, "nero").default_threshold
    return float(st.session_state.get(state.threshold_key(run_name, "nero"), default))
