"""Worklist: which images of this run should not be trusted? Worst first, a row opens it."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from dashboard import components, heatmap_jobs, loaders, review, samples, state, verdicts
from nero.detect.registry import method_label
from nero.run.batches import batch_info, read_batch, run_batches
from nero.run.conformal import p_value_words
from nero.run.reviews import current_reviews, reviews_csv
from nero.run.verdicts import VERDICTS, Thresholds
from nero.tables import safe_csv

PAGE_ROWS = loaders.WORKLIST_PAGE_ROWS
THUMB_PX = loaders.WORKLIST_THUMB_PX
ROW_PX = THUMB_PX + 8
WORKLIST_AHEAD = 3  # the top rows whose maps are prepared while the list is read


def batch_view(r, batch: str) -> None:
    """A batch scored by `nero score`: its table, a video's timeline, one frame at a time."""
    table = read_batch(r, batch)
    info = batch_info(r, batch)
    method = info["verdict_method"]
    thr = verdicts.thresholds(r, method)
    words = {v: verdicts.STYLE[v][2] for v in VERDICTS}
    st.caption(
        f"Batch **{batch}** scored {info['created']}: {len(table)} images. "
        + verdicts.rule_in_words(thr)
    )
    picked = None
    if "time" in table.columns and (table["video"] != "").any():
        picked = _timeline_pick(table, batch, method, thr, words)
    listed = _batch_listing(table, batch, method, words)
    if listed is not None:
        picked = listed
    if picked is not None:
        st.divider()
        _batch_frame(picked, method, thr)
    st.download_button(
        f"Export batch {batch} (CSV)",
        safe_csv(table),
        file_name=f"{r.path.name}-{batch}.csv",
        mime="text/csv",
        icon=":material/download:",
    )


def _timeline_pick(
    table: pd.DataFrame, batch: str, method: str, thr: Thresholds, words: dict[str, str]
) -> pd.Series | None:
    """A video of the batch picked, its scores over time; the frame nearest a clicked dot."""
    from dashboard import charts

    video = st.selectbox(
        "Video", sorted(set(table["video"]) - {""}), format_func=lambda v: Path(v).name
    )
    frames = table[table["video"] == video].sort_values("time")
    chosen = st.plotly_chart(
        charts.score_timeline(
            frames["time"].to_numpy(),
            frames[method].to_numpy(),
            [words[v] for v in frames["verdict"]],
            {words[v]: verdicts.COLOURS[v] for v in VERDICTS} | {"OOD": verdicts.COLOURS["OOD"]},
            thr.borderline,
            thr.ood,
            method_label(method),
        ),
        on_select="rerun",
        selection_mode="points",
        key=f"timeline::{batch}::{video}",
        width="stretch",
    )
    points = chosen.selection.points if chosen is not None else []
    if not points:
        st.caption("Click a dot to see that frame.")
        return None
    time = float(points[0]["x"])
    return frames.iloc[int(np.argmin(np.abs(frames["time"].to_numpy() - time)))]


def _batch_listing(
    table: pd.DataFrame, batch: str, method: str, words: dict[str, str]
) -> pd.Series | None:
    """The batch's rows, worst first; the row clicked, if any."""
    shown = table.sort_values(method, ascending=False, kind="stable")
    listing = st.dataframe(
        shown.assign(verdict=[words[v] for v in shown["verdict"]]),
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=f"batch::{batch}",
    )
    rows = listing.selection.rows if listing is not None else []
    return shown.iloc[rows[0]] if rows else None


def _batch_frame(picked: pd.Series, method: str, thr: Thresholds) -> None:
    """One image of a batch: the image beside its name, prediction and verdict."""
    from dashboard import imaging

    left, right = st.columns([1, 2], gap="large")
    image = loaders.image(str(picked["path"]))
    if image is None:
        left.warning(f"The image file is not readable any more: `{picked['path']}`")
    else:
        left.image(imaging.upscale(image), width="stretch", caption=Path(picked["path"]).name)
    with right:
        when = (
            f" at {picked['time']:.1f} s"
            if "time" in picked and picked["time"] == picked["time"]
            else ""
        )
        st.markdown(
            f"**{Path(str(picked['path'])).name}**{when} · predicted **{picked['predicted']}**"
        )
        verdicts.verdict_badge(float(picked[method]), thr)
        st.caption(
            "Open the **Score a new image** page and upload this frame for its heatmaps and "
            "neurons."
        )


def frame_banner(r, work: pd.DataFrame, only_key: str) -> None:
    """How many flags rest mostly on the frame (of those whose OOD heatmap exists), with a
    button that lists just them."""
    from nero.run.frame_flags import frame_flags

    flagged = work.loc[(work["verdict"] == "OOD") & (work["set"] != "id_train"), "index"]
    if flagged.empty:
        return
    count = frame_flags(r, flagged.tolist())
    if not count.on_frame:
        st.caption(f":material/crop_free: {count.sentence()}")
        return
    st.warning(f":material/crop_free: {count.sentence()}")
    st.button(
        f"List only these {len(count.on_frame)}",
        on_click=st.session_state.__setitem__,
        args=(only_key, count.on_frame),
        key="frame-flags-only",
    )


name, r = components.require_run()
components.header(
    "Worklist",
    "Which images should not be trusted? Every image of the run with its verdict, worst "
    "first. Filter, search, click a row to see why, and export the list.",
)
batches = run_batches(r)
if batches:
    source = st.segmented_control(
        "Images",
        ["the run's images", *batches],
        default="the run's images",
        key=f"worklist-source::{name}",
        help="Batches are new images scored later with `nero score --into`.",
    )
    if source and source != "the run's images":
        batch_view(r, source)
        st.stop()
methods = r.methods
recommended = r.recommendation.method if r.recommendation is not None else None
default_method = r.default_method  # the same on every page
method_key, method_cb = state.persistent_widget(state.method_key(name), default_method)
if st.session_state[method_key] not in methods:
    st.session_state[method_key] = default_method
top = st.columns([2, 2, 2, 3])
method = top[0].selectbox(
    "Verdicts by",
    methods,
    format_func=lambda m: method_label(m) + (" (recommended)" if m == recommended else ""),
    key=method_key,
    **method_cb,
)
thr = verdicts.thresholds(r, method)
table = loaders.table(r)
scores = table[method].to_numpy(np.float64)
reviews = current_reviews(r)
work = pd.DataFrame(
    {
        "index": table["index"],
        "file": table["file"],
        "verdict": thr.verdict(scores),
        "percentile": thr.percentile(scores).round(1),
        "score": scores,
        "p-value": pvals if (pvals := r.p_value(method)) is not None else np.nan,
        "predicted": table["predicted class"],
        "set": table["set"],
        "review": table["index"].map(reviews["review"]).fillna("") if len(reviews) else "",
    }
)
chosen_verdicts = top[1].multiselect(
    "Verdict", VERDICTS, default=list(VERDICTS), format_func=lambda v: verdicts.STYLE[v][2]
)
all_sets = sorted(work["set"].unique())
chosen_sets = top[2].multiselect(
    "Set",
    all_sets,
    default=[s for s in all_sets if s != "id_train"],  # training images are not for review
    placeholder="all sets",
    key=f"worklist-sets::{name}",
)
search = top[3].text_input("File name contains", placeholder="e.g. 00042")
c1, c2 = st.columns([3, 2])
low, high = c1.slider(
    "Score percentile among normal test images", 0.0, 100.0, (0.0, 100.0), step=0.5
)
chosen_classes = c2.multiselect("Predicted class", r.class_names, placeholder="all classes")
shown = work[
    work["verdict"].isin(chosen_verdicts)
    & work["percentile"].between(low, high)
    & (work["set"].isin(chosen_sets) if chosen_sets else True)
    & (work["predicted"].isin(chosen_classes) if chosen_classes else True)
    & (work["file"].str.contains(search, case=False, regex=False) if search else True)
].sort_values(["score"], ascending=False, kind="stable")

only_key = f"worklist-only::{name}"
only = st.session_state.get(only_key)
if only:
    shown = shown[shown["index"].isin(only)]
    st.info(f"Showing only the {len(only)} flags whose OOD heatmap lies mostly on the frame.")
    st.button("Show every image again", on_click=st.session_state.pop, args=(only_key, None))
else:
    frame_banner(r, work, only_key)

st.session_state[state.worklist_key(name)] = shown["index"].tolist()  # next / previous
counts = shown["verdict"].value_counts()
st.caption(
    f"**{len(shown)}** of {len(work)} images · "
    + " · ".join(f"{verdicts.STYLE[v][2]}: {int(counts.get(v, 0))}" for v in VERDICTS)
    + f" · {verdicts.rule_in_words(thr)}"
)
pages = max(1, int(np.ceil(len(shown) / PAGE_ROWS)))
page = 1
if pages > 1:
    page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key=f"worklist-page::{name}"))
rows = shown.iloc[(page - 1) * PAGE_ROWS : page * PAGE_ROWS]


def thumbnail_uri(path: str) -> str | None:
    small = loaders.thumbnail(path, THUMB_PX)
    if small is None:
        return None
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


view = rows.assign(
    image=[thumbnail_uri(str(table["path"].iat[i])) for i in rows["index"]],
    verdict=[f"{verdicts.DOTS[v]} {verdicts.STYLE[v][2]}" for v in rows["verdict"]],
    unusual=[p_value_words(p) for p in rows["p-value"]],
    review=rows["index"].map(review.in_a_line(reviews)).fillna("") if len(reviews) else "",
)[["image", "index", "verdict", "unusual", "percentile", "score", "predicted", "set", "file",
   "review"]]  # fmt: skip
several = st.toggle(
    "Select several",
    key=f"worklist-several::{name}",
    help="Tick rows to review them together or export them; off: a click opens the row.",
)
picked = st.dataframe(
    view,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="multi-row" if several else "single-row",
    row_height=ROW_PX,
    key=f"worklist::{name}::{method}::{page}::{several}",
    column_config={
        "image": st.column_config.ImageColumn("image", width=THUMB_PX + 8, pinned=True),
        "percentile": st.column_config.ProgressColumn(
            "higher than % of normal", min_value=0, max_value=100, format="%.0f %%"
        ),
        "score": st.column_config.NumberColumn(f"{method_label(method)} score", format="%.4g"),
        "unusual": st.column_config.TextColumn(
            "how unusual",
            help="The conformal p-value in words: the share of normal (ID test) frames that "
            "score at least this high. It assumes the frame comes from the same kind of "
            "examination as those normal frames.",
        ),
        "index": st.column_config.NumberColumn("#", format="%d"),
    },
)
selection = picked.selection.rows if picked is not None else []
selected = [int(rows["index"].iat[k]) for k in selection]
if selected and not several:
    samples.open_inspector(selected[0])
if several:
    if not selected:
        st.caption("Tick rows at their left (or the header box for the whole page) to select.")
    else:
        review.bulk_review_form(r, selected, method, scores, thr, key=f"worklist-{name}")
        st.download_button(
            f"Export the {len(selected)} selected rows (CSV)",
            safe_csv(
                work.set_index("index").loc[selected].reset_index()
                .assign(path=table["path"].to_numpy()[selected])
            ),
            file_name=f"{name}-worklist-selection.csv",
            mime="text/csv",
            icon=":material/download:",
            key="export-selection",
        )  # fmt: skip


def export_csv() -> str:
    """The filtered rows with their paths; made on click (a large run's CSV takes a while)."""
    return safe_csv(shown.assign(path=table["path"].to_numpy()[shown["index"].to_numpy()]))


left, right = st.columns(2)
left.download_button(
    f"Export these {len(shown)} rows (CSV)",
    export_csv,
    file_name=f"{name}-worklist.csv",
    mime="text/csv",
    icon=":material/download:",
)
right.download_button(
    "Review history (CSV)",
    lambda: reviews_csv(r),
    file_name=f"{name}-reviews.csv",
    mime="text/csv",
    icon=":material/history:",
    help="Every mark ever saved on this run: who, when, the verdict, method and score shown.",
)
# The rows a reviewer opens next from here: their maps, while they read the list.
heatmap_jobs.prepare_if_loaded(r, shown["index"].tolist()[:WORKLIST_AHEAD])
