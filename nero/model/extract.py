"""One batched forward pass → features (head input) and logits, streamed into .npy files."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nero import DEFAULT_BATCH_SIZE
from nero.data.folders import make_loader
from nero.data.preprocess import Preprocessing
from nero.files import allocate_npy, release_pages
from nero.model.batches import BatchRecorder, ForwardBatch
from nero.model.classifier import capture_head_input
from nero.model.device import exact_float32, resolve_device

# Written rows between two releases of the output maps' pages (flat memory, few syscalls).
RELEASE_ROWS = 4096
Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")


def forward_batches(
    model: nn.Module,
    head: nn.Linear,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    workers: int | None = None,
    envelope: BatchRecorder | None = None,
    envelope_labels: np.ndarray | None = None,
    engine: Engine = "local",
    address: str | None = None,
) -> Iterator[ForwardBatch]:
    """Features (the head's input) and logits of every path, batch by batch, in any order.

    ``engine="local"``: a DataLoader and this process's model. ``engine="ray"``: a Ray Data
    pipeline (:mod:`nero.model.ray_engine`) on the cluster at ``address`` (None: start a
    local one). ``envelope`` (with ``envelope_labels``: one per path, −1 for images that are
    not training images) records the training envelope in the same pass.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    if envelope is not None and (envelope_labels is None or len(envelope_labels) != len(paths)):
        raise ValueError("an envelope recorder needs one label per path (−1: not training)")
    if engine == "ray":
        from nero.model.ray_engine import ray_batches

        yield from ray_batches(
            model,
            head,
            paths,
            preprocessing,
            batch_size,
            device,
            envelope,
            envelope_labels,
            address,
        )
        return
    dev = resolve_device(device)
    model = model.to(dev).eval()
    loader = make_loader(paths, preprocessing, batch_size, workers)
    with (
        capture_head_input(head) as captured,
        torch.inference_mode(),
        exact_float32(dev),
        envelope if envelope is not None else nullcontext(),
    ):
        for images, index, errors, notes in loader:
            out = model(images.to(dev, non_blocking=True))
            batch = ForwardBatch(
                index.numpy().astype(np.int64),
                captured["features"].flatten(1).float().cpu().numpy(),
                out.float().cpu().numpy(),
                list(errors),
                list(notes),
            )
            if envelope is not None:
                envelope.update(np.where(batch.good, envelope_labels[batch.index], -1))
            yield batch


class ExtractionError(RuntimeError):
    """The forward pass produced no usable sample."""


@dataclass
class Extraction:
    """Arrays of the readable samples; ``kept`` indexes them into the input path list."""

    features: np.ndarray
    logits: np.ndarray
    kept: np.ndarray
    failures: dict[str, str]  # path → error of every unreadable image
    notes: dict[str, str]  # path → what decoding changed (EXIF rotation, first frame, …)


def extract(
    model: nn.Module,
    head: nn.Linear,
    paths: Sequence[Path],
    out_dir: str | Path,
    preprocessing: Preprocessing,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    progress: bool = True,
    workers: int | None = None,
    envelope: BatchRecorder | None = None,
    envelope_labels: np.ndarray | None = None,
    engine: Engine = "local",
    address: str | None = None,
) -> Extraction:
    """Write ``features.npy`` (N×D) and ``logits.npy`` (N×C) to ``out_dir`` chunk by chunk.

    Memory stays flat: each batch goes straight into a memory-mapped file. Unreadable images
    are skipped and listed; rows of the output follow the readable paths in order, whatever
    order the engine's batches come back in (see :func:`forward_batches`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(paths)
    if n == 0:
        raise ExtractionError("no images to extract")
    features = logits = None
    ok = np.zeros(n, bool)
    failures: dict[str, str] = {}
    notes: dict[str, str] = {}
    batches = forward_batches(
        model,
        head,
        paths,
        preprocessing,
        batch_size,
        device,
        workers,
        envelope,
        envelope_labels,
        engine,
        address,
    )
    since_release = 0
    with tqdm(total=n, desc="forward pass", unit="img", disable=not progress) as bar:
        for batch in batches:
            if features is None:  # shapes are known after the first batch
                features = allocate_npy(
                    out_dir / "features.npy", np.float32, (n, batch.features.shape[1])
                )
                logits = allocate_npy(
                    out_dir / "logits.npy", np.float32, (n, batch.logits.shape[1])
                )
            idx = batch.index
            features[idx] = batch.features
            logits[idx] = batch.logits
            ok[idx] = batch.good
            for i, err, note in zip(idx, batch.errors, batch.notes, strict=True):
                if err:
                    failures[str(paths[i])] = err
                elif note:
                    notes[str(paths[i])] = note
            bar.update(len(idx))
            since_release += len(idx)
            if since_release >= RELEASE_ROWS:
                release_pages(features, logits)
                since_release = 0
    kept = np.flatnonzero(ok)
    if kept.size == 0:
        raise ExtractionError(
            f"none of the {n} images could be read; first error: {next(iter(failures.items()))}"
        )
    features.flush()
    logits.flush()
    if kept.size < n:  # compact: rows must follow the readable samples only
        features, logits = _compact(out_dir, features, logits, kept)
    return Extraction(np.asarray(features), np.asarray(logits), kept, failures, notes)


def _compact(
    out_dir: Path, features: np.memmap, logits: np.memmap, kept: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    result = []
    for name, arr in (("features", features), ("logits", logits)):
        tmp = out_dir / f"{name}.compact.npy"
        dst = allocate_npy(tmp, np.float32, (kept.size, arr.shape[1]))
        for start in range(0, kept.size, chunk):
            dst[start : start + chunk] = arr[kept[start : start + chunk]]
            release_pages(dst, arr)
        dst.flush()
        del dst
        tmp.replace(out_dir / f"{name}.npy")
        result.append(np.load(out_dir / f"{name}.npy", mmap_mode="r"))
    return result[0], result[1]
