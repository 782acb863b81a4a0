"""UI pieces shared by several pages: run picker, headers, grids, explanations, error boxes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import charts, imaging, loaders, state
from nero.run.directory import Run, RunFormatError

LOG = logging.getLogger("nero.dashboard")
# Page scripts, relative to app.py (what st.switch_page and st.page_link take).
PAGES = {
    "overview": "views/overview.py",
    "map": "views/relevance_map.py",
    "inspector": "views/inspector.py",
    "score": "views/score_image.py",
    "new-run": "views/new_run.py",
}
GRID_COLUMNS = 6
# Neurons shown in the relevance bars by default: enough to see a pattern, few to read.
TOP_NEURONS = 20


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
        st.page_link(PAGES["new-run"], label="Create a new run", icon=":material/add_circle:")
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


def open_inspector(index: int) -> None:
    state.pick_sample(index)
    st.switch_page(PAGES["inspector"], query_params=state.url_params("inspector"))


def sample_caption(row) -> str:
    cls = row["true class"] if row["label"] >= 0 else row["set"]
    return f"#{int(row['index'])} · {cls}"


def nearest_images(table, near: np.ndarray, dist: np.ndarray, key: str) -> None:
    """Thumbnails of the nearest ID training images, captioned with class and distance."""
    thumbnail_grid(
        table,
        near,
        key=key,
        captions=[
            f"#{j} · {table['true class'].iat[j]} · d={dd:.4g}"
            for j, dd in zip(near, dist, strict=True)
        ],
    )


def thumbnail_grid(
    table,
    indices: Sequence[int],
    key: str,
    captions: Sequence[str] | None = None,
    columns: int = GRID_COLUMNS,
    button: bool = True,
) -> None:
    """Small images of samples with an "Inspect" button each."""
    indices = [int(i) for i in indices]
    if not indices:
        st.caption("Nothing to show.")
        return
    cols = st.columns(columns)
    for slot, index in enumerate(indices):
        row = table.iloc[index]
        with cols[slot % columns]:
            thumb = loaders.thumbnail(str(row["path"]))
            caption = captions[slot] if captions is not None else sample_caption(row)
            if thumb is None:
                st.caption(f"{caption} (image file not found)")
            else:
                st.image(thumb, caption=caption, width="stretch")
            if button and st.button("Inspect", key=f"{key}-{index}", width="stretch"):
                open_inspector(index)


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


def score_parts(expl, row: int, detector) -> None:
    """NERO's score and the numbers it is made of (row ``row`` of an Explanation)."""
    distance = float(expl.distance[row])
    bias_term = float(expl.bias_term[row])
    norm_ratio = float(expl.norm_ratio[row])
    score = float(expl.score[row])
    uses_ratio = bool(getattr(detector, "norm_ratio", True))
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Distance to nearest centroid",
        f"{distance:.4g}",
        help="How far the sample's neuron relevance is from the closest class centroid, "
        "in NERO's PCA space (the detector's L1/L2 distance).",
    )
    c2.metric(
        "Bias term",
        f"{bias_term:.4g}",
        help="λ·|bias relevance|: how much of the decision came from the classifier's bias "
        "rather than from the image.",
    )
    c3.metric(
        "Norm ratio" if uses_ratio else "Norm ratio (not used)",
        f"{norm_ratio:.3f}",
        help="Share of the feature activation held by the most negatively relevant neurons "
        "(between 0 and 1)." + ("" if uses_ratio else " This detector is configured without it."),
    )
    c4.metric("NERO score", f"{score:.4g}")
    if uses_ratio:
        st.caption(
            f"score = (distance + bias term) × norm ratio = ({distance:.4g} + "
            f"{bias_term:.4g}) × {norm_ratio:.3f} = **{score:.4g}**"
        )
    else:
        st.caption(
            f"score = distance + bias term = {distance:.4g} + {bias_term:.4g} = **{score:.4g}**"
        )


def neuron_section(
    relevance_row: np.ndarray,
    deviation_row: np.ndarray,
    centroid_row: np.ndarray,
    centroid_label: str,
    key: str,
) -> list[int]:
    """Bars of the most deviating neurons against the nearest centroid; returns their ids."""
    d = deviation_row.shape[0]
    top = st.columns([1, 2])[0].slider(
        "Neurons shown", 5, min(60, d), min(TOP_NEURONS, d), key=f"{key}-top", step=5
    )
    order = np.argsort(-np.abs(deviation_row), kind="stable")[:top]
    fig = charts.neuron_bars(order, relevance_row[order], centroid_row[order], centroid_label)
    st.plotly_chart(fig, key=f"{key}-bars", width="stretch")
    st.caption(
        "Bars: this sample's relevance per neuron (red = supports the prediction, blue = "
        "against). Black ticks: the nearest class centroid. Long gaps between bar and tick are "
        "what makes the sample unusual."
    )
    return [int(j) for j in order]


def run_summary(name: str, r: Run) -> None:
    model = r.manifest["model"]
    counts = r.samples["split"].value_counts()
    ood = sum(int(v) for k, v in counts.items() if str(k).startswith("ood:"))
    st.caption(
        f"**{model['arch']}** at {r.manifest.get('img_size', '?')} px · "
        f"{len(r.class_names)} classes · {int(counts.get('id_train', 0))} train / "
        f"{int(counts.get('id_test', 0))} test / {ood} OOD images · "
        f"ID accuracy {r.report.get('id_accuracy', float('nan')):.1f} %"
    )
    if r.warnings:
        with st.expander(f":material/warning: {len(r.warnings)} warning(s) from this run"):
            for warning in r.warnings:
                st.caption(warning)


def demo_builder(root: Path, where=st) -> None:
    """Offer to build the demo run, with a live progress bar."""
    try:
        from nero.demo import build_demo
    except ImportError:
        where.caption("The demo builder is not part of this installation.")
        return
    where.markdown("**Demo run not built yet**")
    where.caption(
        "Generates a synthetic endoscopy data set, trains a small classifier on CPU and "
        "scores it: about 5 minutes, once."
    )
    if not where.button("Build the demo run", key="build-demo", icon=":material/play_arrow:"):
        return
    bar = where.progress(0.0, text="starting")

    def progress(message: str, fraction: float | None = None, *_rest) -> None:
        frac = 0.0 if fraction is None else min(max(float(fraction), 0.0), 1.0)
        bar.progress(frac, text=str(message))

    try:
        build_demo(root / state.DEMO_RUN, progress=progress)
    except Exception as exc:  # the page must keep working whatever the build hit
        LOG.exception("demo build failed")
        where.error(
            f"Building the demo failed: {exc}\n\nWhat to do: check the disk space and that "
            f"{root} is writable, then try again, or run `nero demo` in a terminal to see more."
        )
        return
    state.switch_run(state.DEMO_RUN, "The demo run is ready.")
    st.rerun()


def sidebar(cfg: state.Config, runs: dict[str, Path]) -> None:
    state.apply_pending_run(runs)
    flash = st.session_state.pop(state.FLASH, None)
    if flash:
        st.toast(flash, icon=":material/check_circle:")
    with st.sidebar:
        st.caption("Explainable out-of-distribution detection with neuron-level relevance.")
        if runs:
            if st.session_state.get(state.RUN) not in runs:
                st.session_state[state.RUN] = state.default_run(cfg, runs)
            st.selectbox(
                "Run",
                list(runs),
                key=state.RUN,
                help=f"Runs found in {cfg.runs_root}. A run is one model scored on one data set.",
            )
            found = current()
            if found is not None:
                run_summary(*found)
        else:
            st.caption(f"No runs in `{cfg.runs_root}` yet.")
        if state.DEMO_RUN not in runs:
            with st.container(border=True):
                demo_builder(cfg.runs_root)


HEATMAP_KINDS = (
    ("class", "Class evidence", "pixels behind the prediction of the chosen class."),
    (
        "ood",
        "OOD evidence",
        "the neurons' deviation from the nearest class centroid, traced back to the pixels "
        "through what exceeds anything the class showed in training. On the demo data "
        "60–71 % of its positive evidence falls on the inserted artefact (bleeding, dye and "
        "instruments 66–90 %, polyps about 30 %): read it as a pointer, not a segmentation.",
    ),
)


def heatmap_views(
    img: np.ndarray,
    compute: Callable[[int | None], dict[str, dict]],
    class_names: Sequence[str],
    predicted: int,
    key: str,
    file_stem: str,
    mask_path: str = "",
) -> Callable[[], None]:
    """Class and OOD heatmaps side by side, over the image, with opacity and downloads.

    Draws the controls and two placeholders now and returns the function that fills them:
    call it at the end of the page, so everything else shows while the heatmaps compute.
    ``compute(target)`` returns both heatmaps (kind → fields), made in one batched pass.
    """
    h1, h2, h3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    target = h1.selectbox(
        "Class explained by the class heatmap",
        list(range(len(class_names))),
        index=predicted,
        format_func=lambda c: class_names[c] + (" (predicted)" if c == predicted else ""),
        key=f"{key}-target",
    )
    op_key, op_cb = state.persistent_widget("heatmap-opacity", 0.7)
    opacity = h2.slider("Heatmap opacity", 0.0, 1.0, step=0.05, key=op_key, **op_cb)
    show_mask = bool(mask_path) and h3.toggle("Artefact outline", True, key=f"{key}-mask")
    slots = []
    for col, (_kind, title, what) in zip(st.columns(2, gap="large"), HEATMAP_KINDS, strict=True):
        col.markdown(f"**{title}**: {what}")
        slot = col.empty()
        slot.caption(":material/hourglass_top: computing the heatmap…")
        slots.append(slot)
    st.caption(
        "Red: evidence for, blue: evidence against; the stronger the colour, the more it "
        "counts. The image is shown in grey underneath so its own colours do not mislead."
    )

    def fill() -> None:
        try:
            maps = compute(target)
        except Exception as exc:  # any engine failure: explain it, keep the page
            LOG.warning("heatmaps failed: %s", exc)
            for slot in slots:
                slot.warning(f"This heatmap could not be computed: {exc}")
            return
        for slot, (kind, _title, _what) in zip(slots, HEATMAP_KINDS, strict=True):
            with slot.container():
                heatmap_panel(
                    img,
                    maps[kind],
                    opacity,
                    mask_path if show_mask else "",
                    f"{key}-dl-{kind}",
                    f"{file_stem}-{kind}-heatmap.png",
                )

    return fill


def heatmap_panel(
    img: np.ndarray,
    hm: dict,
    opacity: float,
    mask_path: str,
    key: str,
    file_name: str,
) -> None:
    """One heatmap over the image, what made it, and its PNG download."""
    picture = imaging.upscale(imaging.overlay(img, hm["relevance"], opacity))
    if mask_path:  # outlined after upscaling, so the line stays thin
        m = loaders.mask(mask_path, (picture.shape[1], picture.shape[0]))
        if m is not None:
            picture = imaging.outline(picture, m)
    st.image(picture, width="stretch")
    facts = [hm["method"], hm["rule_set"]]
    conservation = hm["conservation"]
    if isinstance(conservation, int | float) and np.isfinite(conservation):
        facts.append(f"conservation {conservation:.3g}")
    caption = " · ".join(f for f in facts if f)
    if hm["note"]:
        caption += f"  \n{hm['note']}"
    st.caption(caption)
    st.download_button(
        "Heatmap (PNG)",
        loaders.png_bytes(picture),
        file_name=file_name,
        mime="image/png",
        key=key,
        icon=":material/download:",
    )
