"""The embedded default: synthetic endoscopy data → a small CPU-trained model → a run.

``nero demo`` and the dashboard's first start call :func:`build_demo`; every stage reuses
what already exists, so a second call costs only the checks.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nero.data.demo_data import DemoConfig, demo_data_is_complete, generate_demo_data
from nero.detect.registry import feature_level_methods
from nero.files import write_json
from nero.model.sidecar import read_sidecar, write_sidecar
from nero.model.train import TrainConfig, train_classifier
from nero.run.directory import RunFormatError, read_run
from nero.run.pipeline import Folders, evaluate_folders

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that defines the demo run; ``quick`` is the one used by tests."""

    data: DemoConfig
    train: TrainConfig


# Training threads of the demo model: fixed, so every machine trains the same model (the
# order of float sums depends on the thread count).
DEMO_TRAIN_THREADS = 2
# The demo model trains from scratch on 2 CPU cores: ResNet-18 at 64 px keeps the whole
# build within ~5 minutes while still needing texture and shape to classify.
FULL = DemoRecipe(
    # Artefact scale calibrated so MSP's AUROC on every near-OOD kind lands in 60–90 with the
    # demo model (measured 61–75, far-OOD 78): informative, not saturated.
    DemoConfig(artefact_scale=1.75),
    TrainConfig(
        arch="resnet18",
        epochs=4,
        img_size=64,
        batch_size=32,
        lr=1e-3,
        augment="light",
        val_fraction=0.1,
        seed=42,
        threads=DEMO_TRAIN_THREADS,
    ),
)
QUICK = DemoRecipe(  # the same recipe, as small as a test needs
    DemoConfig(size=64, n_train_per_class=24, n_test_per_class=10, n_ood_per_kind=8),
    dataclasses.replace(
        FULL.train, epochs=1, img_size=32, batch_size=16, val_fraction=0.15, threads=None
    ),
)


# The same data and training recipe at the images' own resolution (128 px). Not the demo
# run: the artefact scale was calibrated on the 64-px model (MSP's AUROC in 60–90), which
# this one does not keep. bench/heatmaps.py --native measures localisation on it.
NATIVE = DemoRecipe(FULL.data, dataclasses.replace(FULL.train, img_size=FULL.data.size))


# The demo is built in a child process whose math libraries are held to one code path that
# every x86-64 CPU with AVX2 and FMA runs alike: numpy and ATen's vector kernels at AVX2, MKL on
# its COMPATIBLE branch (conditional numerical reproducibility, strict: the one branch Intel and
# other vendors' CPUs both run; MKL ignores "AVX2" on an AMD CPU and dispatches by the CPU, which
# gave other weights on an EPYC than on a Xeon), OpenBLAS at Haswell, oneDNN off (its
# convolution kernels block by the CPU's cache sizes), NNPACK off (torch's CPU convolutions
# for batches of 16 and more without oneDNN: its Winograd tiles also follow the CPU; it gave
# other weights on another Xeon), two threads everywhere. Checked by
# bench/demo_reproducibility.py on the machines it has run on.
DEMO_THREADS = 2
PINNED_CODE_PATHS = {
    # numpy's AVX-512 kernels (sin, exp, …) round differently: they changed the generated images
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "OPENBLAS_CORETYPE": "Haswell",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": str(DEMO_THREADS),
    "MKL_NUM_THREADS": str(DEMO_THREADS),
    "OPENBLAS_NUM_THREADS": str(DEMO_THREADS),
    "MKL_DYNAMIC": "FALSE",  # else MKL runs fewer threads than asked on fewer cores
    "OMP_DYNAMIC": "FALSE",
}
PINNED_MARK = "NERO_DEMO_PINNED"
# What a pinned build stamps on its data and model; a new pin (NNPACK off: "-2", MKL's
# vendor-independent branch: "-3") rebuilds demos made under the old one.
PINNED = "avx2-pinned-3"
PROGRESS_PREFIX = "NERO-PROGRESS "


def cpu_runs_pinned_paths() -> bool:
    """The CPU has AVX2 and FMA (what the pinned code paths need)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


def code_paths() -> str:
    """How this process computes: :data:`PINNED` inside the pinned child, else "native"."""
    return PINNED if os.environ.get(PINNED_MARK) == "1" else "native"


def _pin_this_process() -> None:
    """Inside the pinned child: the settings that are not environment variables."""
    import torch

    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(DEMO_THREADS)


def _build_pinned(out: Path, data_dir: Path | None, progress: Progress, verbose: bool) -> Path:
    """:func:`build_demo` in a child process with :data:`PINNED_CODE_PATHS`."""
    command = [sys.executable, "-m", "nero.demo", "--out", str(out)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    env = {**os.environ, **PINNED_CODE_PATHS, PINNED_MARK: "1"}
    tail: list[str] = []
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(PROGRESS_PREFIX):
                fraction, _, message = line[len(PROGRESS_PREFIX) :].rstrip("\n").partition(" ")
                progress(message, float(fraction))
                continue
            tail = [*tail[-19:], line.rstrip("\n")]
            if verbose:
                print(line, end="", flush=True)
    if child.returncode != 0:
        raise RuntimeError(
            f"building the demo failed (exit {child.returncode}): "
            + (" | ".join(t for t in tail[-3:] if t.strip()) or "no output")
        )
    return out


# What a demo run made by this engine holds; a run from before them is rebuilt.
DEMO_REPORT_PARTS = ("acquisition", "conformal")


def _run_is_valid(path: Path) -> bool:
    try:
        run = read_run(path)
    except RunFormatError:
        return False
    return all(part in run.report for part in DEMO_REPORT_PARTS)


def build_demo(
    out: str | Path = "runs/demo",
    data_dir: str | Path | None = None,
    quick: bool = False,
    progress: Progress | None = None,
    verbose: bool = True,
    recipe: DemoRecipe | None = None,
    embed: bool = True,
) -> Path:
    """Generate data, train, evaluate every feature-level method, embed; reuse what exists.

    ``embed=False`` leaves the relevance map out (the dashboard computes it on first use).

    ``recipe`` overrides the one ``quick`` picks (e.g. :data:`NATIVE`). The full demo is
    built in a child process with pinned code paths (:data:`PINNED_CODE_PATHS`) when the CPU
    runs them; the quick one (tests) and other recipes in this process.
    """
    say = progress or (lambda _msg, _frac: None)
    pinned = recipe is None and not quick and cpu_runs_pinned_paths()
    if pinned and code_paths() == "native":
        recipe_now = FULL
        data_now = Path(data_dir) if data_dir else Path(out).parent / f".{Path(out).name}-data"
        model_now = Path(out).parent / f".{Path(out).name}-model" / f"{recipe_now.train.arch}.pt"
        if not (_run_is_valid(Path(out)) and _model_is_current(model_now, data_now, recipe_now)):
            return _build_pinned(Path(out), data_dir, say, verbose)
    if code_paths() != "native":
        _pin_this_process()
    recipe = recipe or (QUICK if quick else FULL)
    out = Path(out)
    # Hidden folders next to the run: run pickers skip names starting with a dot.
    data_dir = Path(data_dir) if data_dir else out.parent / f".{out.name}-data"
    model_path = out.parent / f".{out.name}-model" / f"{recipe.train.arch}.pt"

    if _run_is_valid(out) and _model_is_current(model_path, data_dir, recipe):
        say("demo run already built", 1.0)
        if embed:
            _ensure_embedding(out, say)
        return out

    _ensure_data(data_dir, recipe, say)
    _ensure_model(model_path, data_dir, recipe, say, verbose)
    methods = feature_level_methods()
    say("scoring every sample with every method", 0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny quick sets clip n_components
        evaluate_folders(
            Folders(data_dir),
            out,
            checkpoint=model_path,
            arch=recipe.train.arch,
            img_size=recipe.train.img_size,
            embedding=None,  # below, with numba's compile messages kept off the terminal
            progress=lambda msg, f: say(msg, 0.7 + 0.25 * f),
            methods=methods,
            progress_bar=verbose,
            seed=recipe.train.seed,
            overwrite=True,  # the demo's own folder: an invalid old run is rebuilt
        )
    if embed:
        _ensure_embedding(out, say)
    say("demo run ready", 1.0)
    return out


def _ensure_data(data_dir: Path, recipe: DemoRecipe, say: Progress) -> None:
    """The synthetic images, made again unless complete and made on these code paths."""
    if demo_data_is_complete(data_dir, recipe.data) and _data_paths_current(data_dir, recipe):
        return
    say("generating the synthetic endoscopy data", 0.0)

    def generated(i: int, n: int) -> None:
        if i == n or i % max(n // 10, 1) == 0:  # ten updates, not one per image
            say(f"generating images {i}/{n}", 0.2 * i / max(n, 1))

    shutil.rmtree(data_dir, ignore_errors=True)  # made on other code paths: made again
    generate_demo_data(data_dir, recipe.data, progress=generated)
    manifest = Path(data_dir) / "manifest.json"
    write_json(manifest, {**json.loads(manifest.read_text()), "code_paths": code_paths()})


def _ensure_model(
    model_path: Path, data_dir: Path, recipe: DemoRecipe, say: Progress, verbose: bool
) -> None:
    """The demo classifier, trained again unless trained with this recipe on these data."""
    if _model_is_current(model_path, data_dir, recipe):
        return
    say("training the demo classifier", 0.2)
    train_classifier(
        data_dir,
        model_path,
        recipe.train,
        progress_bar=verbose,
        progress=lambda e, n, rec: say(
            f"training epoch {e}/{n} (validation accuracy {rec['val_accuracy']:.1f} %)",
            0.2 + 0.5 * e / n,
        ),
    )
    # The model belongs to these data: a new data version retrains it.
    identity = demo_data_identity(data_dir)
    write_sidecar(
        model_path,
        {**read_sidecar(model_path), "demo_data": identity, "code_paths": code_paths()},
    )


def _model_is_current(model_path: Path, data_dir: Path, recipe: DemoRecipe) -> bool:
    """The demo model exists and was trained with this recipe on these data."""
    if not model_path.is_file() or not demo_data_is_complete(data_dir, recipe.data):
        return False
    sidecar = read_sidecar(model_path)
    trained = sidecar.get("train", {})
    seen = (trained.get("epochs"), trained.get("img_size"), trained.get("frame", "none"))
    wanted_paths = _wanted_paths(recipe) or sidecar.get("code_paths")
    return (*seen, sidecar.get("demo_data"), sidecar.get("code_paths", "native")) == (
        recipe.train.epochs,
        recipe.train.img_size,
        recipe.train.frame,
        demo_data_identity(data_dir),
        wanted_paths or "native",
    )


def _wanted_paths(recipe: DemoRecipe) -> str | None:
    """The code paths the demo's data and model must come from (None: any)."""
    return PINNED if recipe is FULL and cpu_runs_pinned_paths() else None


def _data_paths_current(data_dir: Path, recipe: DemoRecipe) -> bool:
    wanted = _wanted_paths(recipe)
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    return wanted is None or manifest.get("code_paths", "native") == wanted


def demo_data_identity(data_dir: Path) -> dict:
    """What makes the generated data what they are (source, version, seed, sizes, the code
    paths numpy ran on: its AVX-512 kernels round sin and exp differently)."""
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    keys = ("source", "version", "seed", "size", "counts", "artefact_scale", "code_paths")
    return {k: manifest.get(k) for k in keys}


def _ensure_embedding(run: Path, say: Progress) -> None:
    """UMAP of the relevance vectors, stored in the run (numba compiles once: 30–40 s)."""
    try:
        from nero.run.embedding import ensure_embedding
    except ImportError:  # the embedding module is optional for the engine
        return
    say("computing the relevance map (UMAP)", 0.95)
    with contextlib.redirect_stdout(io.StringIO()):
        ensure_embedding(run)


def demo_code_paths(out: str | Path) -> str:
    """One sentence on how the demo run's model was computed (from its model's sidecar)."""
    out = Path(out)
    model = out.parent / f".{out.name}-model" / f"{FULL.train.arch}.pt"
    try:
        paths = read_sidecar(model).get("code_paths", "native")
    except (OSError, ValueError):
        paths = "native"
    if paths == PINNED:
        return (
            "computed on pinned AVX2 code paths: the same figures on the CPUs "
            "bench/demo_reproducibility.py has checked, not yet on every one (README)"
        )
    return "computed on this CPU's own code paths: another CPU may give other figures"


def _main(argv: list[str] | None = None) -> int:
    """The pinned child of :func:`build_demo` (``python -m nero.demo``)."""
    parser = argparse.ArgumentParser(prog="python -m nero.demo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="the tests' tiny recipe")
    parser.add_argument("--no-map", action="store_true", help="leave the relevance map out")
    args = parser.parse_args(argv)

    def report(message: str, fraction: float) -> None:
        print(f"{PROGRESS_PREFIX}{fraction:.4f} {message}", flush=True)

    build_demo(
        args.out, args.data_dir, quick=args.quick, progress=report, verbose=False,
        embed=not args.no_map,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
