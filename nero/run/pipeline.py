"""From a classifier and class folders to a complete run directory (``nero evaluate``)."""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nero.data.folders import (
    Collection,
    DataError,
    explicit_collection,
    make_loader,
    prepared_collection,
)
from nero.data.preprocess import DEFAULT_IMG_SIZE, Preprocessing
from nero.detect.detector import NERO
from nero.detect.metrics import accuracy, ood_metrics
from nero.detect.params import PRESETS
from nero.detect.registry import Evidence, OODMethod, method_class
from nero.detect.relevance import head_relevance_chunked
from nero.explain.envelope import (
    ENVELOPE_FILE,
    EnvelopeError,
    EnvelopeRecorder,
    gate_points,
)
from nero.explain.kinds import HEATMAP_DIR
from nero.files import allocate_npy, release_pages, write_json
from nero.model.classifier import LoadedModel, head_arrays, sha256_of
from nero.model.device import resolve_device
from nero.model.extract import extract
from nero.run.acquisition import CONTROL_FILE, acquisition_evidence, control_report
from nero.run.conformal import (
    ALPHA,
    FUSION,
    P_PREFIX,
    Calibration,
    choose_members,
    combine,
    fused_statistic,
    p_values,
)
from nero.run.directory import write_samples
from nero.run.fitting import (
    check_training_evidence,
    method_factory,
    recorded_warnings,
    score_methods,
)
from nero.run.manifest import build_manifest
from nero.run.recommend import recommend_for_run
from nero.run.recommendation import Recommendation
from nero.run.settings import EvaluateConfig
from nero.run.staging import staged_run

Progress = Callable[[str, float], None]
RELEVANCE_CHUNK = 8192
# Weights of a model evaluated without a checkpoint, stored inside the run (relative path).
RANDOM_WEIGHTS = "model.safetensors"


def _extraction_key(config: EvaluateConfig, model: LoadedModel, paths: list[Path]) -> str:
    """Identifies a forward pass, so an interrupted evaluation can reuse it."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [config.arch, config.preprocessing.record(), model.checkpoint_sha256, config.seed]
        ).encode()
    )
    for p in paths:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _write_relevance(
    stage: Path, features: np.ndarray, model: LoadedModel, epsilon: float
) -> np.ndarray:
    relevance = allocate_npy(
        stage / "relevance.npy", np.float32, (features.shape[0], features.shape[1] + 1)
    )
    head_relevance_chunked(features, head_arrays(model.head), epsilon, RELEVANCE_CHUNK, relevance)
    relevance.flush()
    return relevance


def mask_for(path: Path, data_root: Path | None, masks_root: Path | None) -> str:
    """The ground-truth artefact mask of an image, if the prepared data has one."""
    if masks_root is None or data_root is None:
        return ""
    try:
        rel = path.relative_to(data_root)
    except ValueError:
        return ""
    mask = (masks_root / rel).with_suffix(".png")
    return str(mask.absolute()) if mask.is_file() else ""  # as the image paths: any cwd


@dataclass
class Evaluation:
    """What the stages of one evaluation hand on to each other, filled in stage by stage:
    read → forward → relevance → fit → score → recommend → calibrate → write."""

    collection: Collection
    model: LoadedModel
    config: EvaluateConfig
    stage: Path
    say: Progress
    data_root: Path | None
    detector: NERO
    key: str = ""
    features: np.ndarray | None = None
    logits: np.ndarray | None = None
    kept: np.ndarray | None = None
    failures: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    relevance: np.ndarray | None = None
    samples: pd.DataFrame | None = None
    evidence: Evidence | None = None
    train: Evidence | None = None
    control: Evidence | None = None
    control_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    control_scores: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    pvals: dict[str, np.ndarray] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    recommendation: Recommendation | None = None

    @property
    def key_file(self) -> Path:
        return self.stage / "extraction.json"

    @functools.cached_property
    def splits(self) -> np.ndarray:
        return np.asarray(self.collection.split_names, object)[self.kept]

    @functools.cached_property
    def labels(self) -> np.ndarray:
        return self.collection.labels[self.kept]

    @functools.cached_property
    def kept_paths(self) -> list[Path]:
        return [self.collection.paths[i] for i in self.kept]

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    @property
    def candidates(self) -> list[str]:
        """The scored methods that need no images of their own (proxies can rescore them)."""
        return [m for m in self.scores if not method_class(m).needs_inputs]


def evaluate(
    collection: Collection,
    model: LoadedModel,
    config: EvaluateConfig,
    out: str | Path,
    progress: Progress | None = None,
    data_root: Path | None = None,
) -> Path:
    """Run the whole engine and write ``out`` atomically; returns its path.

    ``out`` is checked before anything is computed (see :func:`nero.run.directory.staged_run`): it
    must not overlap the input folders or the checkpoint, and an existing run is replaced
    only with ``config.overwrite``.
    """
    _check_request(collection, model, config)
    detector = NERO.from_preset(config.preset, random_state=config.seed, **config.nero_params)
    data_roots = [s.root for s in collection.splits] + ([data_root] if data_root else [])
    keep = [Path(config.checkpoint)] if config.checkpoint else []
    say = progress or (lambda _stage, _frac: None)
    with staged_run(out, data_roots, keep, config.overwrite) as stage:
        ev = Evaluation(collection, model, config, stage, say, data_root, detector)
        with recorded_warnings() as engine_warnings:
            if config.frame_source == "no record":
                warnings.warn(NO_RECORD_NOTE, stacklevel=2)
            if not _read(ev):
                _forward(ev)
            _relevance(ev)
            _fit(ev)
            _score(ev)
            if config.recommend and len(ev.candidates) > 1:
                _recommend(ev)
            ev.pvals = _calibrate(
                ev.report, ev.scores, ev.candidates, ev.labels, ev.rows("id_test"), ev.splits,
                config.seed,
            )  # fmt: skip
            _control_fusion(ev)
        _write(ev, engine_warnings)
    say("done", 1.0)
    return Path(out)


def _check_request(collection: Collection, model: LoadedModel, config: EvaluateConfig) -> None:
    if model.num_classes != len(collection.class_names):
        raise ValueError(
            f"the model has {model.num_classes} outputs but the data has "
            f"{len(collection.class_names)} classes {collection.class_names}"
        )
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; choose from {sorted(PRESETS)}")


def _read(ev: Evaluation) -> bool:
    """Reuse the forward pass of an interrupted run of the same request; False: none."""
    ev.key = _extraction_key(ev.config, ev.model, ev.collection.paths)
    if not ev.key_file.is_file() or json.loads(ev.key_file.read_text()).get("key") != ev.key:
        return False
    ev.say("reusing the forward pass of an interrupted run", 0.5)
    saved = json.loads(ev.key_file.read_text())
    ev.features = np.load(ev.stage / "features.npy", mmap_mode="r")
    ev.logits = np.load(ev.stage / "logits.npy", mmap_mode="r")
    ev.kept = np.asarray(saved["kept"], np.int64)
    ev.failures, ev.notes = saved["failures"], saved.get("notes", {})
    _warn_about_inputs(ev)
    return True


def _forward(ev: Evaluation) -> None:
    ev.say("forward pass", 0.0)
    ev.features, ev.logits, ev.kept, ev.failures, ev.notes = _forward_pass(
        ev.collection, ev.model, ev.config, ev.stage
    )
    record = {"key": ev.key, "kept": ev.kept.tolist(), "failures": ev.failures, "notes": ev.notes}
    write_json(ev.key_file, record)
    _warn_about_inputs(ev)


def _warn_about_inputs(ev: Evaluation) -> None:
    if ev.failures:
        warnings.warn(
            f"skipped {len(ev.failures)} unreadable images (listed in manifest.json)",
            stacklevel=3,
        )
    if ev.notes:
        warnings.warn(
            f"{len(ev.notes)} images were changed while decoding or preparing (EXIF "
            "rotation, first frame of an animation, transparency, grey or 16-bit, a "
            "field of view not found; see the notes column of samples.csv)",
            stacklevel=3,
        )


def _relevance(ev: Evaluation) -> None:
    ev.say("relevance", 0.6)
    ev.relevance = _write_relevance(ev.stage, ev.features, ev.model, ev.detector.epsilon)


def _fit(ev: Evaluation) -> None:
    """The samples table and the training evidence the methods are fitted on."""
    kept_paths, preds = ev.kept_paths, np.asarray(ev.logits).argmax(axis=1)
    ev.samples = pd.DataFrame(
        {
            "index": np.arange(ev.kept.size),
            "path": [str(p.absolute()) for p in kept_paths],
            "split": ev.splits,
            "label": ev.labels,
            "pred": preds,
            "notes": [ev.notes.get(str(p), "") for p in kept_paths],
        }
    )
    if ev.config.masks_root is not None:
        ev.samples["mask"] = [mask_for(p, ev.data_root, ev.config.masks_root) for p in kept_paths]
    if ev.rows("id_train").size == 0 or ev.rows("id_test").size == 0:
        raise DataError("no readable id_train or id_test images are left to fit and test on")
    ev.evidence = Evidence(
        np.asarray(ev.features), np.asarray(ev.logits), np.asarray(ev.relevance), ev.labels
    )
    ev.train = ev.evidence.rows(ev.rows("id_train"))
    release_pages(ev.features, ev.logits, ev.relevance)  # views or copies: the pages can go
    check_training_evidence(ev.train, ev.collection.class_names)


def _score(ev: Evaluation) -> None:
    """Every method fitted and scored (and the acquisition control with them), and the
    per-set metrics."""
    config, head = ev.config, head_arrays(ev.model.head)
    kept_paths = ev.kept_paths

    def from_images(method: OODMethod) -> np.ndarray:  # ODIN: a batched gradient pass
        loader = make_loader(kept_paths, config.preprocessing, config.batch_size)
        device = resolve_device(config.device)
        return method.score_inputs(ev.model.model, ev.model.head, loader, device)

    control_seconds = 0.0
    if config.control:
        ev.say("acquisition control: frame-only copies", 0.68)
        started = time.perf_counter()
        ev.control, ev.control_rows = acquisition_evidence(
            kept_paths, ev.splits, model=ev.model, preprocessing=config.preprocessing,
            head=head, epsilon=ev.detector.epsilon, batch_size=config.batch_size,
            device=config.device,
        )  # fmt: skip
        control_seconds = time.perf_counter() - started
    ev.scores = score_methods(
        config.methods, ev.detector, ev.train, ev.evidence, head, from_images, ev.say,
        ev.control, ev.control_scores,
    )  # fmt: skip
    make = method_factory(ev.detector, fresh=True)
    ev.method_params = {m: make(m).get_params() for m in ev.scores}
    test_rows, preds = ev.rows("id_test"), ev.samples["pred"].to_numpy()
    ev.report = {"id_accuracy": accuracy(ev.labels[test_rows], preds[test_rows]), "results": {}}
    for split in dict.fromkeys(s for s in ev.splits if s.startswith("ood:")):
        rows = ev.splits == split
        ev.report["results"][split.split(":", 1)[1]] = {
            m: ood_metrics(ev.scores[m][test_rows], ev.scores[m][rows]) for m in ev.scores
        }
    if ev.control is not None:
        ev.report["acquisition"] = {
            **control_report(ev.control_scores, ev.splits[ev.control_rows]),
            "seconds": round(control_seconds, 2),
        }


def _recommend(ev: Evaluation) -> None:
    """Which method to trust on this model, from ID data alone (:mod:`nero.run.recommend`)."""
    ev.say("estimating which method to trust, from ID data alone", 0.95)
    ev.train = None  # the proxies copy their own capped rows: keep one copy at a time
    test_rows, kept_paths = ev.rows("id_test"), ev.kept_paths
    ev.recommendation = recommend_for_run(
        ev.candidates,
        method_factory(ev.detector, fresh=True),
        ev.evidence,
        ev.rows("id_train"),
        test_rows,
        ev.model,
        [kept_paths[i] for i in test_rows],
        ev.config.preprocessing,
        ev.detector.epsilon,
        head_arrays(ev.model.head),
        ev.collection.class_names,
        ev.config.seed,
    )
    ev.report["recommended"] = ev.recommendation.record()


def _control_fusion(ev: Evaluation) -> None:
    """``fusion`` on the acquisition control too: its members' frame-only scores as p-values
    against the run's ID test scores, combined as the run combines them (so the control says
    whether the fused score, too, can be had from the frame alone)."""
    if FUSION not in ev.scores or not ev.control_scores or "acquisition" not in ev.report:
        return
    members = ev.report[FUSION]["members"]
    if not all(m in ev.control_scores for m in members):
        return
    test_rows = ev.rows("id_test")
    ev.control_scores[FUSION] = combine(
        [p_values(ev.scores[m][test_rows], ev.control_scores[m]) for m in members],
        ev.report[FUSION]["combination"],
    )
    seconds = ev.report["acquisition"].get("seconds")
    ev.report["acquisition"] = {
        **control_report(ev.control_scores, ev.splits[ev.control_rows]),
        "seconds": seconds,
    }


def _write(ev: Evaluation, engine_warnings: list[str]) -> None:
    """The run's files into the stage; the stage becomes the run when the block ends."""
    ev.say("writing the run", 0.97)
    stage, model = ev.stage, ev.model
    checkpoint, digest = ev.config.checkpoint, model.checkpoint_sha256
    if checkpoint is None:  # keep a random model's weights so heatmaps can be made later
        from safetensors.torch import save_model

        save_model(model.model, str(stage / RANDOM_WEIGHTS))
        checkpoint, digest = RANDOM_WEIGHTS, sha256_of(stage / RANDOM_WEIGHTS)
    else:  # absolute: the run loads it the same way from any working directory
        checkpoint = str(Path(checkpoint).expanduser().resolve())
    p_columns = {P_PREFIX + m: p for m, p in ev.pvals.items()}
    scores_df = pd.DataFrame({"index": np.arange(ev.kept.size), **ev.scores, **p_columns})
    write_samples(stage / "samples.csv", ev.samples)
    scores_df.to_csv(stage / "scores.csv", index=False, float_format="%.9g")
    write_json(stage / "report.json", ev.report)
    if ev.control_scores:
        control_table = pd.DataFrame({"index": ev.control_rows, **ev.control_scores})
        control_table.to_csv(stage / CONTROL_FILE, index=False, float_format="%.9g")
    ev.detector.save(stage / "detector.npz")
    manifest = build_manifest(
        ev.config, model, ev.collection, ev.detector, ev.splits, ev.failures, list(ev.scores),
        ev.method_params, checkpoint, digest, engine_warnings, ev.report.get(FUSION),
    )  # fmt: skip
    ev.key_file.unlink()
    write_json(stage / "manifest.json", manifest.record())


def _calibrate(
    report: dict,
    scores: dict[str, np.ndarray],
    candidates: list[str],
    labels: np.ndarray,
    test_rows: np.ndarray,
    splits: np.ndarray,
    seed: int,
) -> dict[str, np.ndarray]:
    """Conformal p-values of every method (:mod:`nero.run.conformal`) and, where the run has a
    recommendation to choose members from, the ``fusion`` score; both go into the report."""
    if test_rows.size < 4:
        warnings.warn("fewer than 4 ID test images: no conformal p-values", stacklevel=2)
        return {}
    calibration = Calibration.of_run(test_rows, labels, seed)
    pvals = {m: calibration.run_p_values(v) for m, v in scores.items()}
    recommendation = Recommendation.from_record(report.get("recommended"))
    ranking = list(recommendation.ranking) if recommendation is not None else []
    combination = "fisher"
    if recommendation is not None and len(recommendation.fusion_members) >= 2:
        members, why = list(recommendation.fusion_members), recommendation.fusion_why
        combination = recommendation.fusion_combination
    else:  # no proxies to choose on: the ranking's best, near-copies skipped
        members, why = choose_members(ranking, {m: scores[m][test_rows] for m in candidates})
    if len(members) >= 2:
        scores[FUSION] = fused_statistic(pvals, members, combination)
        pvals[FUSION] = calibration.run_p_values(scores[FUSION])
        report[FUSION] = {"members": members, "combination": combination, "why": why}
        for split in dict.fromkeys(s for s in splits if s.startswith("ood:")):
            rows = splits == split
            report["results"][split.split(":", 1)[1]][FUSION] = ood_metrics(
                scores[FUSION][test_rows], scores[FUSION][rows]
            )
    report["conformal"] = {
        "alpha": ALPHA,
        "calibration": (
            f"the {test_rows.size} ID test images (never training images: a model finds the "
            "images it was trained on more normal than new frames); cross-fitted in two "
            f"class-stratified halves for their own p-values (seed {seed})"
        ),
        "smallest_p": round(1.0 / (int(np.sum(calibration.fold == 1)) + 1.0), 6),
        "realised_fpr": {m: round(calibration.realised_fpr(p), 2) for m, p in pvals.items()},
    }
    return pvals


def _forward_pass(
    collection: Collection, model: LoadedModel, config: EvaluateConfig, stage: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str], dict[str, str]]:
    """Features and logits of every readable image; the heatmaps' envelope in the same pass."""
    recorder = None
    if gate_points(model.model):
        recorder = EnvelopeRecorder(model.model, len(collection.class_names))
    is_train = np.asarray(collection.split_names, object) == "id_train"
    ex = extract(
        model.model,
        model.head,
        collection.paths,
        stage,
        config.preprocessing,
        config.batch_size,
        config.device,
        config.progress_bar,
        envelope=recorder,
        envelope_labels=np.where(is_train, collection.labels, -1),
        engine=config.engine,
        address=config.address,
    )
    if recorder is not None and recorder.counts.any():
        try:
            envelope = recorder.result()
        except EnvelopeError as exc:  # e.g. inputs too small: heatmaps go ungated
            warnings.warn(f"no training envelope for the OOD heatmap: {exc}", stacklevel=2)
        else:
            (stage / HEATMAP_DIR).mkdir(exist_ok=True)
            envelope.save(stage / HEATMAP_DIR / ENVELOPE_FILE)
    return ex.features, ex.logits, ex.kept, ex.failures, ex.notes


# ------------------------------------------------------------------ the one front door
@dataclass(frozen=True)
class Folders:
    """Where the images are: one prepared folder, or ID train/test folders and OOD sets."""

    data: Path | None = None  # id_train/<class>/, id_test/<class>/, ood/<set>/ (+ masks/)
    id_train: Path | None = None
    id_test: Path | None = None
    ood: dict[str, Path] = field(default_factory=dict)

    def collection(self, class_names: list[str] | None = None) -> Collection:
        if self.data is not None:
            if self.id_train or self.id_test or self.ood:
                raise DataError("give either a prepared folder or ID train/test and OOD folders")
            return prepared_collection(self.data)
        if not (self.id_train and self.id_test and self.ood):
            raise DataError(
                "give a prepared folder, or an ID training folder, an ID test folder and at "
                "least one OOD folder"
            )
        return explicit_collection(self.id_train, self.id_test, self.ood, class_names)

    @property
    def masks(self) -> Path | None:
        """The prepared folder's ground-truth masks, if it has them."""
        if self.data is not None and (self.data / "masks").is_dir():
            return self.data / "masks"
        return None


NO_RECORD_NOTE = (
    "the checkpoint's sidecar has no preprocessing record (a model trained before NERO "
    "Explorer recorded it, or trained elsewhere): its images are fed as plain square resizes "
    "(--frame none), frames and their overlays included"
)


def _trained_frame(checkpoint: Path | None, sidecar: dict, frame: str | None) -> tuple[str, str]:
    """The frame mode a model was trained with, and where that came from."""
    record = sidecar.get("preprocessing")
    if isinstance(record, dict):
        trained = Preprocessing.from_record(record).frame
        if frame is not None and frame != trained:
            raise ValueError(
                f"{checkpoint} was trained with --frame {trained} (its sidecar JSON says so); "
                f"feeding it --frame {frame} would show it images it never learnt: drop --frame"
            )
        return trained, "sidecar"
    if frame is not None:
        return frame, "given"
    if checkpoint is None:
        return "auto", "default"
    return "none", "no record"


@dataclass(frozen=True)
class EvaluationRequest:
    """One evaluation as every front door asks for it (``nero evaluate``, the dashboard's
    New-run page, the demo, the benches): the images, the model, and the settings."""

    folders: Folders
    out: Path
    checkpoint: Path | None = None
    arch: str | None = None  # None: the checkpoint's sidecar
    img_size: int | None = None  # None: the sidecar's, else DEFAULT_IMG_SIZE
    frame: str | None = None  # None: as the sidecar says the model was trained
    trust_pickle: bool = False
    embedding: str | None = "umap"  # the relevance map's method, None: none
    heatmap_scale: bool = True  # calibrate the heatmaps' colour scale on normal images
    settings: dict[str, Any] = field(default_factory=dict)  # other EvaluateConfig fields


def evaluate_folders(
    folders: Folders,
    out: str | Path,
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    img_size: int | None = None,
    frame: str | None = None,
    trust_pickle: bool = False,
    embedding: str | None = "umap",
    heatmap_scale: bool = True,
    progress: Progress | None = None,
    **settings: Any,
) -> Path:
    """:func:`evaluate_request` with the request's fields as arguments."""
    request = EvaluationRequest(
        folders, Path(out), Path(checkpoint).expanduser() if checkpoint else None, arch,
        img_size, frame, trust_pickle, embedding, heatmap_scale, settings,
    )  # fmt: skip
    return evaluate_request(request, progress)


def evaluate_request(request: EvaluationRequest, progress: Progress | None = None) -> Path:
    """Image folders and a checkpoint → a complete run: what every front door calls.

    Defaults (architecture and image size from the checkpoint's sidecar, else
    :data:`nero.data.folders.DEFAULT_IMG_SIZE`), seeding (a model without a checkpoint gets the
    same random weights for the same ``seed``) and model loading are the same everywhere.
    The model is fed as it was trained: ``frame`` (:data:`nero.data.preprocess.FRAME_MODES`)
    comes from the sidecar's preprocessing record, and a different ``frame`` is refused; a
    checkpoint without the record gets the plain resize (``"none"``) and the run says so; a
    model without a checkpoint gets ``frame`` or ``"auto"``.
    """
    import torch

    from nero.model.classifier import load_classifier
    from nero.model.sidecar import read_sidecar

    folders, settings, checkpoint = request.folders, request.settings, request.checkpoint
    sidecar = read_sidecar(checkpoint) if checkpoint else {}
    arch = request.arch or sidecar.get("arch")
    if not arch:
        raise ValueError("the architecture is needed (no sidecar JSON next to the checkpoint)")
    if sidecar.get("arch") and sidecar["arch"] != arch:
        raise ValueError(
            f"the checkpoint's sidecar JSON says it is a {sidecar['arch']}, not a {arch}"
        )
    img_size = int(request.img_size or sidecar.get("img_size") or DEFAULT_IMG_SIZE)
    frame, frame_source = _trained_frame(checkpoint, sidecar, request.frame)
    collection = folders.collection(sidecar.get("class_names"))
    seed = int(settings.get("seed", EvaluateConfig.seed))
    torch.manual_seed(seed)  # a model without a checkpoint is random: make it repeatable
    model = load_classifier(
        arch, checkpoint, len(collection.class_names), img_size, request.trust_pickle
    )
    config = EvaluateConfig(
        arch=arch,
        img_size=img_size,
        frame=frame,
        frame_source=frame_source,
        checkpoint=str(checkpoint.resolve()) if checkpoint else None,
        masks_root=folders.masks,
        **settings,
    )
    say = progress or (lambda _m, _f: None)
    run = evaluate(
        collection, model, config, request.out, progress=progress, data_root=folders.data
    )
    if request.embedding is not None:
        from nero.run.embedding import ensure_embedding

        say("computing the relevance map", 1.0)
        ensure_embedding(run, method=request.embedding)
    if request.heatmap_scale:
        from nero.run.directory import read_run
        from nero.run.heatmaps import heatmaps_of

        say("calibrating the heatmaps on normal images", 1.0)
        heatmaps_of(read_run(run)).scale()
    return run
