"""The forward pass on Ray: decoding in Ray Data tasks, one model per actor, batches streamed back.

The driver sends the model once (``ray.put``) and the image *paths*; workers read the files
themselves (so they must see the same paths: a shared file system on a cluster), decode
them in ``map_batches`` tasks, and an actor pool (one model per actor, a GPU each when the
cluster has them) returns features, logits and — for training images — the per-class
maxima of the heatmaps' envelope. The driver folds those, writes the arrays and fits every
detector itself, so a run made on Ray is the run the local engine makes (tested to 1e-5).
``docs/SCALING.md`` says how to point it at a cluster and what crosses the network.
"""

from __future__ import annotations

import io
import math
import socket
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nero.data.folders import ImageListDataset
from nero.data.preprocess import Preprocessing
from nero.model.batches import BatchRecorder, ForwardBatch
from nero.model.classifier import capture_head_input
from nero.model.device import exact_float32, resolve_device

# Rows per input block: enough blocks for every worker, few enough to keep scheduling cheap.
ROWS_PER_BLOCK = 1024


ADDRESS_TIMEOUT_S = 5.0  # how long to wait for a cluster's port to answer


def check_address(address: str | None) -> None:
    """Refuse an ``--address`` that is not ``auto``/``local``/``[ray://]host:port``, or whose
    port nobody answers on, before anything is computed (Ray itself would retry for minutes)."""
    if address in (None, "auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or ":" in host.strip("[]"):
        raise ValueError(
            f"--address {address!r}: expected auto, local or host:port (ray://host:port for a "
            "Ray client)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), ADDRESS_TIMEOUT_S).close()
    except OSError as exc:
        raise ValueError(f"--address {address!r}: no Ray cluster answers there ({exc})") from None


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to), or
    start a local one (None); a session already open in this process is reused."""
    import ray

    if ray.is_initialized():
        return
    check_address(address)
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is not None:
        import nero

        # Workers on other machines import the engine from this copy of the package.
        options["runtime_env"] = {"py_modules": [str(Path(nero.__file__).parent)]}
    ray.init(address=address, **options)


def actor_layout(device: torch.device, resources: dict[str, float]) -> tuple[int, float, float]:
    """(actors, CPUs, GPUs per actor): one actor per GPU; on CPUs, a quarter of the cores run
    models (2 threads each) and the rest decode images."""
    gpus = int(resources.get("GPU", 0))
    if device.type == "cuda" and gpus:
        return gpus, 1.0, 1.0
    cpus = int(resources.get("CPU", 1))
    per_actor = 2.0 if cpus >= 4 else 1.0
    return max(1, cpus // 4), per_actor, 0.0


def decode_batch(batch: dict[str, np.ndarray], preprocessing: dict) -> dict[str, np.ndarray]:
    """Paths → model inputs, with the same reader and preprocessing (its record) as the local
    engine."""
    prepare = Preprocessing.from_record(preprocessing)
    dataset = ImageListDataset([Path(p) for p in batch["path"]], prepare)
    items = [dataset[i] for i in range(len(dataset))]  # one file each: decoding is per image
    return {
        "row": np.asarray(batch["row"], np.int64),
        "label": np.asarray(batch["label"], np.int64),
        "image": np.stack([image.numpy() for image, *_ in items]),
        "error": np.array([error for _, _, error, _ in items], object),
        "note": np.array([note for *_, note in items], object),
    }


class ForwardActor:
    """One copy of the model: decoded images → features, logits and envelope maxima."""

    def __init__(
        self,
        model: Any,
        head_name: str,
        device: str | None,
        recorder_kind: type | None,
        n_classes: int,
    ) -> None:
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        self.device = resolve_device(device)
        self.model: nn.Module = model.to(self.device).eval()
        self.head = self.model.get_submodule(head_name)
        self.recorder: BatchRecorder | None = (
            recorder_kind(self.model, n_classes) if recorder_kind is not None else None
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = torch.from_numpy(np.ascontiguousarray(batch["image"])).to(self.device)
        good = np.array([not e for e in batch["error"]], bool)
        with (
            capture_head_input(self.head) as captured,
            torch.inference_mode(),
            exact_float32(self.device),
            self.recorder if self.recorder is not None else nullcontext(),
        ):
            logits = self.model(images).float().cpu().numpy()
            if self.recorder is not None:
                self.recorder.update(np.where(good, batch["label"], -1))
        envelope = np.full(len(good), b"", object)
        if self.recorder is not None:
            part = self.recorder.take()
            if part["counts"].any():  # plain arrays in an .npz: no pickles cross the wire
                buffer = io.BytesIO()
                np.savez(buffer, **part)
                envelope[0] = buffer.getvalue()
        return {
            "row": batch["row"],
            "features": captured["features"].flatten(1).float().cpu().numpy(),
            "logits": logits,
            "error": batch["error"],
            "note": batch["note"],
            "envelope": envelope,
        }


def ray_batches(
    model: nn.Module,
    head: nn.Linear,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    batch_size: int,
    device: str | None = None,
    envelope: BatchRecorder | None = None,
    envelope_labels: np.ndarray | None = None,
    address: str | None = None,
) -> Iterator[ForwardBatch]:
    """:func:`nero.model.extract.forward_batches` on Ray, batches in the order of ``paths``."""
    try:
        import pyarrow as pa
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError("the Ray engine needs Ray Data: pip install 'ray[data]'") from exc

    connect(address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows one bar for the whole pass
    context.execution_options.preserve_order = True  # rows of `nero score` follow its inputs
    n = len(paths)
    labels = np.full(n, -1, np.int64) if envelope_labels is None else envelope_labels
    # Columns in Arrow, not a dict per image: a million paths stay ~100 MB on the driver.
    items = pa.table(
        {
            "row": np.arange(n, dtype=np.int64),
            "path": pa.array([str(p) for p in paths], pa.string()),
            "label": np.asarray(labels, np.int64),
        }
    )
    resources = ray.cluster_resources()
    blocks = max(1, math.ceil(n / ROWS_PER_BLOCK), min(n, int(resources.get("CPU", 1))))
    dev = resolve_device(device)
    actors, cpus, gpus = actor_layout(dev, resources)
    head_name = next(name for name, module in model.named_modules() if module is head)
    model_ref = ray.put(model.to("cpu").eval())
    data = (
        ray.data.from_arrow(items)
        .repartition(blocks)
        .map_batches(
            decode_batch, fn_kwargs={"preprocessing": preprocessing.record()}, batch_size=batch_size
        )
        .map_batches(
            ForwardActor,
            fn_constructor_kwargs={
                "model": model_ref,
                "head_name": head_name,
                "device": str(dev) if gpus else "cpu",
                "recorder_kind": type(envelope) if envelope is not None else None,
                "n_classes": envelope.n_classes if envelope is not None else 0,
            },
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
            num_gpus=gpus,
        )
    )
    for out in data.iter_batches(batch_size=None, batch_format="numpy"):
        if envelope is not None:
            for blob in out["envelope"]:
                if blob:
                    with np.load(io.BytesIO(blob), allow_pickle=False) as part:
                        envelope.fold({key: part[key] for key in part.files})
        yield ForwardBatch(
            np.asarray(out["row"], np.int64),
            np.asarray(out["features"], np.float32),
            np.asarray(out["logits"], np.float32),
            [str(e) for e in out["error"]],
            [str(v) for v in out["note"]],
        )
