"""The training envelope of spatial layers, and the gate that lets only what exceeds it explain.

The OOD heatmap asks *where* an image is unlike its class. Plain LRP answers "which pixels
support these neurons", and the pixels that support a deviating neuron are mostly ordinary
tissue: every activation carries relevance in proportion to its size, typical or not.

The **envelope** of a class is, at the *gate points* (layers with a spatial map), the largest
value each unit (channel × position) takes over that class's training images. The **envelope
gate** splits an activation ``a`` into the part inside the envelope ``m`` and the excess
``(a − m)⁺``; of the relevance reaching the unit, only the excess share ``(a − m)⁺ / a``
travels further down (``a`` carries relevance in proportion to itself under the z⁺ rules).
The part inside the envelope is explained by the class and stops there. The forward pass is
unchanged; only what flows backwards is gated.

Gate points are spatially resolved layers: a map smaller than 4×4 is left out, since each
of its positions sees the whole image and an envelope there cannot say where. Only families
whose gate-point outputs are non-negative (post-ReLU) have gate points — ResNet (stem and
every residual block), VGG (first max-pools), DenseNet (its stem only); the others, and the
Gradient×Input fallbacks, get the plain OOD heatmap, and the result says so. The gate
points were chosen, and the gain measured, on ResNet-18 only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import VGG, DenseNet, ResNet

from nero.data.folders import make_loader
from nero.data.preprocess import Preprocessing
from nero.files import save_npz
from nero.model.device import resolve_device

ENVELOPE_FILE = "envelope.npz"
# A gate point whose map is smaller than this on either side is left out: there every
# position sees (nearly) the whole image, so exceeding the envelope cannot say where.
# (ResNet-18's last stage: 2×2 at 64 px — left out; 4×4 at 128 px, 7×7 at 224 px — kept.)
MIN_GATE_SIDE = 4
VGG_POOLS = 3  # VGG: the outputs of the first three max-pools (after a ReLU)


def gate_points(model: nn.Module) -> tuple[str, ...]:
    """Candidate modules whose (non-negative) outputs are gated; empty: none known.

    ResNet: the stem's max-pool and every residual block (each ends in a ReLU). VGG: its
    first max-pools. DenseNet: the stem's max-pool only (inside its blocks, concatenated
    convolution outputs can be negative, which the excess share ``(a − m)⁺ / a`` does not
    cover). Chosen on the first 20 near-OOD demo images of each kind, at 64 and 128 px
    (``bench/heatmaps.py --skip-per-set 20`` reports the other 80).
    """
    if isinstance(model, ResNet):
        blocks = [
            f"{stage}.{i}"
            for stage in ("layer1", "layer2", "layer3", "layer4")
            for i in range(len(model.get_submodule(stage)))
        ]
        return ("maxpool", *blocks)
    if isinstance(model, VGG):
        pools = [n for n, m in model.features.named_children() if isinstance(m, nn.MaxPool2d)]
        return tuple(f"features.{n}" for n in pools[:VGG_POOLS])
    if isinstance(model, DenseNet):
        return ("features.pool0",)
    return ()


class EnvelopeError(ValueError):
    """An envelope that does not fit the model or run it is used with."""


@dataclass(frozen=True)
class Envelope:
    """Per class, the maximum of each unit at each gate point over the training images."""

    maxima: dict[str, np.ndarray]  # gate point → classes × channels × h × w (float32)
    counts: np.ndarray  # training images per class

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(self.maxima)

    @property
    def n_classes(self) -> int:
        return len(self.counts)

    def save(self, path: str | Path) -> None:
        """Write ``.npz`` atomically (plain arrays, no pickles)."""
        arrays = {f"max:{name}": value for name, value in self.maxima.items()}
        meta = json.dumps({"points": list(self.maxima)})
        save_npz(path, counts=self.counts, meta=np.array(meta), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Envelope:
        with np.load(path, allow_pickle=False) as z:
            points = json.loads(str(z["meta"]))["points"]
            maxima = {name: z[f"max:{name}"].astype(np.float32) for name in points}
            return cls(maxima=maxima, counts=z["counts"].astype(np.int64))

    def check(self, model: nn.Module, n_classes: int) -> None:
        """Raise :class:`EnvelopeError` unless this envelope was made for such a model."""
        if not self.points or not set(self.points) <= set(gate_points(model)):
            raise EnvelopeError(
                f"the envelope has gate points {list(self.points)}, the model "
                f"{type(model).__name__} has {list(gate_points(model))}"
            )
        if self.n_classes != n_classes:
            raise EnvelopeError(
                f"the envelope has {self.n_classes} classes, the model has {n_classes} classes"
            )


class EnvelopeRecorder:
    """Running per-class maxima at the gate points, fed by forward passes made elsewhere.

    Use as a context manager around the forward passes (it hooks the gate points); after
    each batch call :meth:`update` with the batch's labels (−1: not a training image).
    """

    def __init__(self, model: nn.Module, n_classes: int) -> None:
        self.points = gate_points(model)
        if not self.points:
            raise EnvelopeError(f"{type(model).__name__} has no gate points for an envelope")
        self.model = model
        self.n_classes = n_classes
        self.counts = np.zeros(n_classes, np.int64)
        self._outputs: dict[str, torch.Tensor] = {}
        self._maxima: dict[str, torch.Tensor] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._handles: list = []

    def __enter__(self) -> EnvelopeRecorder:
        self._handles = [
            self.model.get_submodule(name).register_forward_hook(
                lambda _m, _i, out, name=name: self._outputs.__setitem__(name, out)
            )
            for name in self.points
        ]
        return self

    def __exit__(self, *_exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._outputs.clear()

    def update(self, labels: torch.Tensor | np.ndarray) -> None:
        """Fold in the last forward pass: row ``b`` counts for class ``labels[b]`` (≥ 0)."""
        labels = torch.as_tensor(np.asarray(labels, np.int64))
        if ((labels >= self.n_classes) | (labels < -1)).any():
            raise EnvelopeError(f"training labels must lie in 0..{self.n_classes - 1} (or -1)")
        rows = torch.nonzero(labels >= 0).flatten()
        if rows.numel() == 0:
            return
        self.counts += np.bincount(labels[rows].numpy(), minlength=self.n_classes)
        for name in self.points:
            out = self._outputs[name]
            flat = out[rows.to(out.device)].float().reshape(len(rows), -1)
            if name not in self._maxima:  # outputs are post-ReLU: 0 is the identity
                self._maxima[name] = torch.zeros(self.n_classes, flat.shape[1], device=out.device)
                self._shapes[name] = tuple(out.shape[1:])
            index = labels[rows].to(out.device)[:, None].expand_as(flat)
            self._maxima[name].scatter_reduce_(0, index, flat, "amax", include_self=True)

    def take(self) -> dict[str, np.ndarray]:
        """What was recorded since the last ``take`` (and forget it): plain arrays, the maxima
        of the classes seen only, so that another recorder can :meth:`fold` them in."""
        seen = np.flatnonzero(self.counts)
        part = {"counts": self.counts.copy()}
        for name, maxima in self._maxima.items():
            part[f"max:{name}"] = maxima[torch.as_tensor(seen)].cpu().numpy()
            part[f"shape:{name}"] = np.asarray(self._shapes[name], np.int64)
        self.counts = np.zeros(self.n_classes, np.int64)
        self._maxima.clear()
        return part

    def fold(self, part: dict[str, np.ndarray]) -> None:
        """Fold in what another recorder of the same model :meth:`take`-s (running maxima)."""
        counts = np.asarray(part["counts"], np.int64)
        if counts.shape != (self.n_classes,):
            raise EnvelopeError(f"a part for {counts.size} classes, not {self.n_classes}")
        seen = torch.as_tensor(np.flatnonzero(counts))
        self.counts += counts
        for name in self.points:
            if f"max:{name}" not in part:
                continue
            rows = torch.as_tensor(np.asarray(part[f"max:{name}"], np.float32))
            if name not in self._maxima:
                self._maxima[name] = torch.zeros(self.n_classes, rows.shape[1])
                self._shapes[name] = tuple(int(v) for v in part[f"shape:{name}"])
            here = self._maxima[name]
            rows = rows.to(here.device)
            here[seen] = torch.maximum(here[seen], rows)

    def result(self) -> Envelope:
        """The envelope at the gate points whose maps are at least MIN_GATE_SIDE a side."""
        if not self._maxima:
            raise EnvelopeError("no training image reached the envelope")
        kept = [n for n in self.points if min(self._shapes[n][-2:]) >= MIN_GATE_SIDE]
        if not kept:
            raise EnvelopeError(
                f"every gate point's map is smaller than {MIN_GATE_SIDE}×{MIN_GATE_SIDE}: "
                "the input is too small for an envelope"
            )
        return Envelope(
            maxima={
                n: self._maxima[n].reshape(self.n_classes, *self._shapes[n]).cpu().numpy()
                for n in kept
            },
            counts=self.counts.copy(),
        )


@torch.no_grad()
def fit_envelope(
    model: nn.Module,
    paths: Sequence[Path],
    labels: Sequence[int],
    n_classes: int,
    preprocessing: Preprocessing,
    batch_size: int = 64,
    device: str | None = None,
) -> Envelope:
    """One streamed forward pass over the training images; running maxima per class.

    Unreadable images are skipped (they were skipped when the run was made, too).
    """
    labels_t = torch.as_tensor(np.asarray(labels, np.int64))
    if len(labels_t) != len(paths) or len(paths) == 0:
        raise EnvelopeError(
            f"need one label per training image, got {len(labels_t)} for {len(paths)} images"
        )
    if labels_t.min() < 0 or labels_t.max() >= n_classes:
        raise EnvelopeError(f"training labels must lie in 0..{n_classes - 1}")
    # Where the model already is, unless told: a CPU model on a GPU machine stays on the CPU.
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    recorder = EnvelopeRecorder(model, n_classes)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with recorder:
            for images, index, errors, _notes in make_loader(paths, preprocessing, batch_size):
                ok = torch.tensor([not e for e in errors])
                if ok.any():
                    model(images[ok].to(dev))
                    recorder.update(labels_t[index[ok]])
    finally:
        for module, flag in flags:
            module.training = flag
    return recorder.result()


@contextmanager
def envelope_gate(
    model: nn.Module, envelope: Envelope, row_classes: Sequence[int | None]
) -> Iterator[None]:
    """Gate the backward pass at the envelope's points, row by row of the batch.

    ``row_classes[b]`` is the class whose envelope gates row ``b``; ``None`` leaves the row
    ungated (e.g. a class heatmap computed in the same batch).
    """
    gated = torch.tensor([c is not None for c in row_classes])
    classes = np.array([0 if c is None else int(c) for c in row_classes])

    def hook(name: str):
        def gate(_module: nn.Module, _inputs, out: torch.Tensor) -> torch.Tensor:
            if out.shape[1:] != envelope.maxima[name].shape[1:]:
                raise EnvelopeError(
                    f"gate point {name} has shape {tuple(out.shape[1:])}, the envelope "
                    f"{envelope.maxima[name].shape[1:]}: a different input size?"
                )
            # Only the rows' classes travel to the device (the whole envelope can be MBs).
            limit = torch.as_tensor(envelope.maxima[name][classes], device=out.device)
            limit = torch.where(gated.view(-1, 1, 1, 1).to(out.device), limit, 0.0)
            excess = (out - limit).clamp(min=0) / out.detach().clamp(min=1e-12)
            share = torch.where(out.detach() > 0, excess, 0.0).detach()
            # Value unchanged, bit for bit; the gradient (the relevance, under LRP rules)
            # reaches the layer below scaled by the share.
            scaled = out * share
            return out.detach() + (scaled - scaled.detach())

        return gate

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in envelope.points]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
