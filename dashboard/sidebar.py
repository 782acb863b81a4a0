"""The sidebar: the run picker, the open run's summary and warnings, the demo builder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import streamlit as st

from dashboard import identity, loaders, state
from dashboard.components import LOG, current
from nero.run.directory import Run


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
    # Found, not imported: the builder imports torch (seconds), only worth it on a click.
    if importlib.util.find_spec("nero.demo") is None:
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
        from nero.demo import build_demo

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


def _is_demo(path: Path) -> bool:
    """A run of the generated demo data, wherever it lies (its ID data sit in a demo folder)."""
    try:
        run = loaders.run(path)
    except (OSError, ValueError):
        return False
    root = str(run.manifest.get("data", {}).get("splits", {}).get("id_train", {}).get("root", ""))
    return Path(root).parent.name.endswith("-data") and Path(root).parent.name.startswith(".")


def sidebar(cfg: state.Config, runs: dict[str, Path]) -> None:
    state.apply_pending_run(runs)
    flash = st.session_state.pop(state.FLASH, None)
    if flash:
        st.toast(flash, icon=":material/check_circle:")
    with st.sidebar:
        st.caption("Explainable out-of-distribution detection with neuron-level relevance.")
        identity.sign_out_button()
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
        if not runs:
            with st.container(border=True):
                demo_builder(cfg.runs_root)
        elif state.DEMO_RUN not in runs and not any(_is_demo(p) for p in runs.values()):
            with st.expander("The embedded demo run", icon=":material/science:"):
                demo_builder(cfg.runs_root)
