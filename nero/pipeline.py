"""From a classifier and class folders to a complete run directory (``nero evaluate``)."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from nero.data import Collection
from nero.detector import NERO, PRESETS
from nero.envelope import (
    ENVELOPE_FILE,
    HEATMAP_DIR,
    EnvelopeError,
    EnvelopeRecorder,
    gate_points,
)
from nero.extract import DEFAULT_BATCH_SIZE, extract, make_loader, resolve_device
from nero.methods import Evidence, NeroMethod, create_method
from nero.metrics import accuracy, ood_metrics
from nero.models import LoadedModel, head_arrays, sha256_of
from nero.relevance import head_relevance_chunked
from nero.run import FORMAT_VERSION, library_versions, staged_run, write_json, write_samples

Progress = Callable[[str, float], None]
RELEVANCE_CHUNK = 8192
# Weights of a model evaluated without a checkpoint, stored inside the run (relative path).
RANDOM_WEIGHTS = "model.safetensors"


@dataclass
class EvaluateConfig:
    arch: str
    img_size: int = 224
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str | None = None
    methods: list[str] = field(default_factory=lambda: ["nero"])
    preset: str = "default"
    nero_params: dict = field(default_factory=dict)
    seed: int = 42
    checkpoint: str | None = None
    progress_bar: bool = True
    masks_root: Path | None = None  # prepared data's masks/ folder, if any


def _extraction_key(config: EvaluateConfig, model: LoadedModel, paths: list[Path]) -> str:
    """Identifies a forward pass, so an interrupted evaluation can reuse it."""
    h = hashlib.sha256()
    h.update(
        json.dumps([config.arch, config.img_size, model.checkpoint_sha256, config.seed]).encode()
    )
    for p in paths:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _write_relevance(
    stage: Path, features: np.ndarray, model: LoadedModel, epsilon: float
) -> np.ndarray:
    relevance = open_memmap(
        stage / "relevance.npy", "w+", np.float32, (features.shape[0], features.shape[1] + 1)
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
    return str(mask) if mask.is_file() else ""


def evaluate(
    collection: Collection,
    model: LoadedModel,
    config: EvaluateConfig,
    out: str | Path,
    progress: Progress | None = None,
    data_root: Path | None = None,
) -> Path:
    """Run the whole engine and write ``out`` atomically; returns its path."""
    say = progress or (lambda _stage, _frac: None)
    if model.num_classes != len(collection.class_names):
        raise ValueError(
            f"the model has {model.num_classes} outputs but the data has "
            f"{len(collection.class_names)} classes {collection.class_names}"
        )
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; choose from {sorted(PRESETS)}")
    detector = NERO.from_preset(config.preset, random_state=config.seed, **config.nero_params)
    paths = collection.paths
    with staged_run(out) as stage:
        key = _extraction_key(config, model, paths)
        key_file = stage / "extraction.json"
        if key_file.is_file() and json.loads(key_file.read_text()).get("key") == key:
            say("reusing the forward pass of an interrupted run", 0.5)
            saved = json.loads(key_file.read_text())
            features = np.load(stage / "features.npy", mmap_mode="r")
            logits = np.load(stage / "logits.npy", mmap_mode="r")
            kept = np.asarray(saved["kept"], np.int64)
            failures = saved["failures"]
        else:
            say("forward pass", 0.0)
            # The heatmaps' training envelope is recorded in the same pass (ResNets).
            recorder = None
            if gate_points(model.model):
                recorder = EnvelopeRecorder(model.model, len(collection.class_names))
            is_train = np.asarray(collection.split_names, object) == "id_train"
            ex = extract(
                model.model,
                model.head,
                paths,
                stage,
                config.img_size,
                config.batch_size,
                config.device,
                config.progress_bar,
                envelope=recorder,
                envelope_labels=np.where(is_train, collection.labels, -1),
            )
            features, logits, kept, failures = ex.features, ex.logits, ex.kept, ex.failures
            if recorder is not None and recorder.counts.any():
                try:
                    envelope = recorder.result()
                except EnvelopeError as exc:  # e.g. inputs too small: heatmaps go ungated
                    warnings.warn(f"no training envelope for the OOD heatmap: {exc}", stacklevel=2)
                else:
                    (stage / HEATMAP_DIR).mkdir(exist_ok=True)
                    envelope.save(stage / HEATMAP_DIR / ENVELOPE_FILE)
            write_json(key_file, {"key": key, "kept": kept.tolist(), "failures": failures})
        if failures:
            warnings.warn(
                f"skipped {len(failures)} unreadable images (listed in manifest.json)", stacklevel=2
            )
        say("relevance", 0.6)
        relevance = _write_relevance(stage, features, model, detector.epsilon)

        labels = collection.labels[kept]
        splits = np.asarray(collection.split_names, object)[kept]
        kept_paths = [paths[i] for i in kept]
        preds = np.asarray(logits).argmax(axis=1)
        masks_root = config.masks_root
        samples = pd.DataFrame(
            {
                "index": np.arange(kept.size),
                "path": [str(p.absolute()) for p in kept_paths],
                "split": splits,
                "label": labels,
                "pred": preds,
            }
        )
        if masks_root is not None:
            samples["mask"] = [mask_for(p, data_root, masks_root) for p in kept_paths]

        train_rows = np.flatnonzero(splits == "id_train")
        test_rows = np.flatnonzero(splits == "id_test")
        if train_rows.size == 0 or test_rows.size == 0:
            raise ValueError("no readable id_train or id_test images are left to fit and test on")
        evidence = Evidence(np.asarray(features), np.asarray(logits), np.asarray(relevance))
        train = Evidence(
            evidence.features[train_rows],
            evidence.logits[train_rows],
            evidence.relevance[train_rows],
            labels[train_rows],
        )
        head = head_arrays(model.head)
        scores = {"index": np.arange(kept.size)}
        for i, name in enumerate(config.methods):
            say(f"fitting {name}", 0.7 + 0.25 * i / len(config.methods))
            method = NeroMethod(detector) if name == "nero" else create_method(name)
            method.fit(train, head)
            if method.needs_inputs:  # ODIN: a batched gradient pass over the kept images
                loader = make_loader(kept_paths, config.img_size, config.batch_size)
                device = resolve_device(config.device)
                scores[name] = method.score_inputs(model.model, model.head, loader, device)
            else:
                scores[name] = method.score(evidence)
        if "nero" not in config.methods:  # the run always holds the fitted detector
            NeroMethod(detector).fit(train, head)
        scores_df = pd.DataFrame(scores)

        report = {"id_accuracy": accuracy(labels[test_rows], preds[test_rows]), "results": {}}
        for split in dict.fromkeys(s for s in splits if s.startswith("ood:")):
            rows = splits == split
            report["results"][split.split(":", 1)[1]] = {
                m: ood_metrics(scores_df[m].to_numpy()[test_rows], scores_df[m].to_numpy()[rows])
                for m in config.methods
            }

        say("writing the run", 0.97)
        checkpoint, digest = config.checkpoint, model.checkpoint_sha256
        if checkpoint is None:  # keep a random model's weights so heatmaps can be made later
            from safetensors.torch import save_model

            save_model(model.model, str(stage / RANDOM_WEIGHTS))
            checkpoint, digest = RANDOM_WEIGHTS, sha256_of(stage / RANDOM_WEIGHTS)
        write_samples(stage / "samples.csv", samples)
        scores_df.to_csv(stage / "scores.csv", index=False, float_format="%.9g")
        write_json(stage / "report.json", report)
        detector.save(stage / "detector.npz")
        head_shape = [model.head.out_features, model.head.in_features]
        write_json(
            stage / "manifest.json",
            {
                "format_version": FORMAT_VERSION,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": {
                    "arch": config.arch,
                    "checkpoint": checkpoint,
                    "checkpoint_sha256": digest,
                    "class_names": collection.class_names,
                    "head": {"name": model.head_name, "shape": head_shape},
                },
                "data": {
                    "splits": {
                        s.name: {"root": str(s.root), "size": int((splits == s.name).sum())}
                        for s in collection.splits
                    },
                    "unreadable": failures,
                },
                "preset": config.preset,
                "nero": {
                    **detector.get_params(),
                    "bias_scale": detector.bias_scale_,
                    "norm_neurons_used": detector.norm_neurons_,
                    "n_components_used": int(detector.pca_components_.shape[0]),
                },
                "methods": config.methods,
                "img_size": config.img_size,
                "batch_size": config.batch_size,
                "seed": config.seed,
                "versions": library_versions(),
            },
        )
        key_file.unlink()
    say("done", 1.0)
    return Path(out)
