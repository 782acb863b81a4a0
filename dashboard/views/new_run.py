"""New run: score your own classifier on your own image folders."""

from __future__ import annotations

import time
from datetime import datetime

import streamlit as st

from dashboard import components, pages, state
from dashboard.runs import COMMON_ARCHS, FormError, RunRequest, create_run
from nero.data.preprocess import DEFAULT_IMG_SIZE
from nero.detect.registry import feature_level_methods, method_class

PREPARED = "One prepared folder"
SEPARATE = "Separate folders"

cfg = components.config()
components.header(
    "New run",
    "Score a classifier on your own images. NERO runs one forward pass over every image, fits "
    "on the ID training images and writes a run you can explore here.",
)
with st.expander("What the folders must look like", expanded=False):
    st.markdown(
        "- **Prepared folder**: `id_train/<class>/*.jpg`, `id_test/<class>/*.jpg` and "
        "`ood/<set name>/**/*.jpg` (what `nero prepare` and the demo write).\n"
        "- **Separate folders**: an ID training and an ID test folder, each with one "
        "sub-folder per class (the same class names), plus one folder per OOD set.\n"
        "- The **checkpoint** is a `.pt`, `.pth` or `.safetensors` state dict of the chosen "
        "torchvision architecture, with as many outputs as there are classes. Leave it empty "
        "to try the tool with random weights (the scores then mean nothing).\n"
        f"- The run is written to `{cfg.runs_root}/<run name>`."
    )

methods = feature_level_methods()
mode = st.radio(
    "Data layout",
    (PREPARED, SEPARATE),
    horizontal=True,
    key="nr-mode",
    help="A prepared folder holds id_train/, id_test/ and ood/; otherwise give each folder.",
)
data = id_train = id_test = ood = ""
with st.form("new-run"):
    c1, c2 = st.columns(2)
    name = c1.text_input("Run name", value=f"run-{datetime.now():%Y%m%d-%H%M}", key="nr-name")
    overwrite = c1.checkbox("Replace an existing run of that name")
    arch = c2.selectbox(
        "Architecture",
        COMMON_ARCHS,
        accept_new_options=True,
        help="Any torchvision classifier name; type another one if it is not listed.",
    )
    checkpoint = c2.text_input(
        "Checkpoint file (optional)", placeholder="/path/to/model.pt", key="nr-checkpoint"
    )
    if mode == PREPARED:
        data = st.text_input(
            "Prepared folder",
            placeholder="/path/to/data  (holds id_train/, id_test/, ood/)",
            key="nr-data",
        )
    else:
        s1, s2 = st.columns(2)
        id_train = s1.text_input("ID training folder", placeholder="/path/to/train")
        id_test = s2.text_input("ID test folder", placeholder="/path/to/test")
        ood = st.text_area(
            "OOD sets, one per line as NAME=FOLDER",
            placeholder="polyps=/path/to/polyps\nnon-endoscopy=/path/to/other",
            height=90,
        )
    o1, o2 = st.columns([1, 3])
    img_size = o1.number_input(
        "Image size (px)",
        min_value=0,
        max_value=1024,
        value=0,
        key="nr-img-size",
        help=f"0 = the size saved with the checkpoint (its sidecar JSON), else {DEFAULT_IMG_SIZE}.",
    )
    chosen = o2.multiselect(
        "Methods",
        methods,
        default=methods,
        format_func=lambda m: method_class(m).label,
        key="nr-methods",
        help="NERO and the baselines that work from the cached forward pass.",
    )
    submitted = st.form_submit_button("Create run", type="primary", key="nr-submit")

if submitted:
    request = RunRequest(
        name=name.strip(),
        arch=str(arch or "").strip(),
        checkpoint=checkpoint,
        data=data if mode == PREPARED else "",
        id_train=id_train if mode == SEPARATE else "",
        id_test=id_test if mode == SEPARATE else "",
        ood=ood if mode == SEPARATE else "",
        img_size=int(img_size) or None,  # the form's 0 = automatic
        methods=list(chosen),
        overwrite=overwrite,
    )
    if mode == PREPARED and not data.strip():
        st.error("Enter the prepared folder, or choose **Separate folders**.")
        st.stop()
    bar = st.progress(0.0, text="checking the inputs")
    start = time.perf_counter()

    def progress(message: str, fraction: float) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        out = create_run(request, cfg.runs_root, progress)
    except FormError as exc:
        bar.empty()
        st.error(f"**{exc.field.replace('_', ' ')}**: {exc}")
        st.stop()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        bar.empty()
        st.error(
            f"The run could not be created: {exc}\n\nWhat to do: check that the checkpoint "
            "belongs to the chosen architecture, that its number of outputs matches the number "
            "of class folders, and that the folders hold readable images."
        )
        st.stop()
    bar.progress(1.0, text="placing the samples on the relevance map")
    try:
        from nero.run.embedding import ensure_embedding

        with st.spinner("Computing the relevance map (UMAP; about a minute the first time)…"):
            ensure_embedding(out)
    except Exception as exc:  # the run is complete without the map; the map page offers it
        st.warning(f"The run is ready but its relevance map failed: {exc}")
    state.switch_run(out.name, f"Run {out.name} created in {time.perf_counter() - start:.0f} s.")
    st.success(f"Run **{out.name}** created in {time.perf_counter() - start:.0f} s.")
    st.page_link(pages.script("overview"), label="Open its overview", icon=":material/insights:")
