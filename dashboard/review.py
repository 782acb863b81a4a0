"""The review form: agree / disagree / unsure with the verdict shown, tags and a note.

A mark records who (from :mod:`dashboard.identity`), the method, its score, the verdict on the
page and the cut-offs it came from, so a later reader knows what exactly was agreed with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import identity
from nero.run.directory import Run
from nero.run.reviews import REVIEWS, Mark, ReviewStoreError, add_marks, current_reviews
from nero.run.verdicts import Thresholds

REVIEW_WORDS = {"agree": "Agree", "disagree": "Disagree", "unsure": "Unsure"}


def cutoffs_in_words(thr: Thresholds) -> str:
    return f"borderline > {thr.borderline:.6g}, OOD > {thr.ood:.6g}"


def in_a_line(reviews: pd.DataFrame) -> pd.Series:
    """Each reviewed sample's latest mark in a worklist cell: the mark, the verdict it was
    given on (and by which method), its tags and note."""
    on = np.where(
        reviews["method"].fillna("").astype(str) != "",
        " (on " + reviews["verdict"].astype(str) + " by " + reviews["method"].astype(str) + ")",
        "",
    )
    tags = np.where(reviews["tags"].fillna("") != "", " · " + reviews["tags"].astype(str), "")
    notes = np.where(reviews["note"].fillna("") != "", " — " + reviews["note"].astype(str), "")
    return reviews["review"].map(REVIEW_WORDS) + on + tags + notes


def last_review_caption(r: Run, index: int, where=st) -> None:
    reviews = current_reviews(r)
    if index not in reviews.index:
        where.caption("Not reviewed yet.")
        return
    last = reviews.loc[index]
    shown = f" (verdict {last['verdict']} by {last['method']})" if last["method"] else ""
    tags = f" · tags: {last['tags']}" if last["tags"] else ""
    where.caption(
        f"Last review by {last['reviewer']} ({last['time'][:19].replace('T', ' ')} UTC): "
        f"**{REVIEW_WORDS[last['review']]}**{shown}{tags}"
        + (f" — {last['note']}" if last["note"] else "")
    )


def save_marks(
    r: Run,
    indices: Sequence[int],
    review: str,
    method: str,
    scores: np.ndarray,
    verdicts: Sequence[str],
    thr: Thresholds,
    note: str = "",
    tags: str = "",
) -> int | None:
    """Save one mark per sample in one transaction; the number saved, or None (said why)."""
    who = identity.current()
    if who is None:
        st.error("Type your name first: this server has no sign-in to say who you are.")
        return None
    marks = [
        Mark(
            int(i),
            review,
            who.name,
            who.identity,
            note,
            tuple(tags.split(",")),
            method,
            float(s),
            str(v),
            cutoffs_in_words(thr),
        )  # fmt: skip
        for i, s, v in zip(indices, scores, verdicts, strict=True)
    ]
    try:
        return add_marks(r, marks)
    except (OSError, ValueError, ReviewStoreError) as exc:
        st.error(f"The review could not be saved (nothing was changed): {exc}")
        return None


def review_form(r: Run, index: int, method: str, score: float, verdict: str, thr: Thresholds):
    """The form beside a sample's verdict."""
    last_review_caption(r, index)
    with st.form(f"review-{index}", clear_on_submit=True, border=False):
        choice = st.radio(
            f"The verdict '{verdict}' ({method}) is…",
            REVIEWS,
            horizontal=True,
            format_func=REVIEW_WORDS.get,
        )
        tags = st.text_input("Tags (comma-separated, optional)", placeholder="frame, bubbles")
        note = st.text_input("Note (optional)", max_chars=500)
        identity.name_input()
        if st.form_submit_button("Save review", icon=":material/save:"):
            saved = save_marks(
                r, [index], choice, method, np.asarray([score]), [verdict], thr, note, tags
            )
            if saved:
                st.toast("Review saved in the run.", icon=":material/check:")


def bulk_review_form(
    r: Run, indices: Sequence[int], method: str, scores: np.ndarray, thr: Thresholds, key: str
) -> None:
    """One review for every sample of a selection (worklist rows, a lasso on the map): each
    gets its own mark, with its own score and the verdict shown for it."""
    indices = [int(i) for i in indices]
    chosen = np.asarray(scores, np.float64)[indices]
    shown = [str(v) for v in thr.verdict(chosen)]
    with st.form(f"bulk-review-{key}", clear_on_submit=True, border=True):
        st.markdown(f":material/rate_review: **Review the {len(indices)} selected images**")
        choice = st.radio(
            f"Their verdicts ({method}) are…",
            REVIEWS,
            horizontal=True,
            format_func=REVIEW_WORDS.get,
            key=f"bulk-choice-{key}",
        )
        tags = st.text_input(
            "Tags (comma-separated, optional)", placeholder="frame, bubbles", key=f"bulk-tags-{key}"
        )
        note = st.text_input("Note (optional)", max_chars=500, key=f"bulk-note-{key}")
        identity.name_input()
        if st.form_submit_button(
            f"Save for all {len(indices)}", icon=":material/done_all:", disabled=not indices
        ):
            saved = save_marks(r, indices, choice, method, chosen, shown, thr, note, tags)
            if saved:
                st.toast(f"{saved} reviews saved in the run.", icon=":material/check:")
