"""Train a torchvision classifier on the prepared layout's ``id_train`` classes (CPU or GPU).

Checkpoint selection uses a validation split carved from the training data, never the ID
test set (the release selects on its test set, which leaks into the OOD evaluation).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm.auto import tqdm

from nero import DEFAULT_BATCH_SIZE, DEFAULT_SEED, __version__
from nero.data.folders import Split, class_folder_split, class_folders
from nero.data.images import ImageReadError, decode_image
from nero.data.preprocess import DEFAULT_IMG_SIZE, Preprocessing
from nero.files import atomic_path
from nero.model.classifier import build_model, find_head, read_state_dict
from nero.model.device import resolve_device
from nero.model.sidecar import write_sidecar

# Augmentation recipes: "paper" is spec §7; "light" keeps colour semantics (the demo's
# OOD kinds are partly colour cues, which invert/equalize would teach the model to ignore).
AUGMENTATIONS = ("paper", "light", "none")


@dataclass
class TrainConfig:
    arch: str = "resnet18"
    epochs: int = 20
    img_size: int = DEFAULT_IMG_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = 1e-4  # Adam, the paper's recipe
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    augment: str = "paper"
    frame: str = "auto"  # nero.data.preprocess.FRAME_MODES: frame-invariant input by default
    seed: int = DEFAULT_SEED
    device: str | None = None
    workers: int = 0
    # CPU threads while training: a fixed count makes the float sums (and so the model)
    # the same on every machine; None keeps torch's default (all cores).
    threads: int | None = None


def augmentation(name: str, preprocessing: Preprocessing) -> transforms.Compose:
    """Random changes of an already prepared S×S image, then the model's normalisation."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {name!r}")
    steps: list = []
    if name in ("paper", "light"):
        steps += [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()]
    if name == "paper":
        steps += [
            transforms.ColorJitter(0.2, 0.2, 0.2, 0.02),
            transforms.RandomInvert(p=0.1),
            transforms.RandomEqualize(p=0.1),
        ]
    elif name == "light":
        steps += [transforms.ColorJitter(0.1, 0.1, 0.05, 0.0)]
    steps += [transforms.ToTensor(), transforms.Normalize(preprocessing.mean, preprocessing.std)]
    return transforms.Compose(steps)


class DecodedImages(Dataset):
    """Images decoded and prepared once, kept in memory (training reads each many times).

    Each is kept as the model sees it (:meth:`Preprocessing.prepare`); augmentation changes
    it afterwards, and the frame-invariant input's outside is blanked again (flips keep the
    disc; colour jitter would otherwise tint it). Unreadable files are left out and listed in
    ``failures`` (path → reason); ``statuses`` counts how each field of view was found.
    """

    def __init__(
        self, paths: list[Path], labels: np.ndarray, preprocessing: Preprocessing, transform
    ) -> None:
        self.images, self.inside, kept = [], [], []
        self.failures: dict[str, str] = {}
        self.statuses: dict[str, int] = {}
        for i, path in enumerate(paths):
            try:
                prepared = preprocessing.prepare(decode_image(path).image)
            except ImageReadError as exc:
                self.failures[str(path)] = str(exc)
                continue
            self.images.append(prepared.image)
            self.inside.append(prepared.inside)
            self.statuses[prepared.status] = self.statuses.get(prepared.status, 0) + 1
            kept.append(i)
        self.labels = torch.as_tensor(np.asarray(labels)[kept])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = Preprocessing.blank_outside(self.transform(self.images[i]), self.inside[i])
        return x, self.labels[i]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Indices (train, val): ``fraction`` of each class (at least one if it has ≥ 2) to val."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = math.floor(fraction * members.size) if members.size >= 2 else 0
        val += members[: max(k, 1 if members.size >= 2 and fraction > 0 else 0)].tolist()
    val_idx = np.sort(np.asarray(val, np.int64))
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx)
    return train_idx, val_idx


def train_classifier(
    data_dir: str | Path,
    out: str | Path,
    config: TrainConfig,
    init_weights: str | Path | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    progress_bar: bool = True,
) -> dict:
    """Train on ``data_dir/id_train`` and write ``out`` (state_dict) plus its JSON sidecar."""
    data_dir = Path(data_dir)
    train_root = data_dir / "id_train" if (data_dir / "id_train").is_dir() else data_dir
    classes = class_folders(train_root)
    split = class_folder_split("id_train", train_root, classes)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    dev = resolve_device(config.device)
    with _training_threads(config.threads), _deterministic():
        return _train(
            config, split, classes, dev, train_root, out, init_weights, progress, progress_bar
        )


@contextmanager
def _training_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels where torch has them (warns, rather than fails, where not)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(
    config: TrainConfig,
    split: Split,
    classes: list[str],
    dev: torch.device,
    train_root: Path,
    out: str | Path,
    init_weights: str | Path | None,
    progress: Callable[[int, int, dict], None] | None,
    progress_bar: bool,
) -> dict:
    """The training loop of :func:`train_classifier` (under its threads and determinism)."""

    model = build_model(config.arch, len(classes), config.img_size)
    if init_weights is not None:
        _load_backbone(model, init_weights, config.img_size)
    model.to(dev)
    prep = Preprocessing(config.img_size, config.frame)
    train_set, val_set = _datasets(config, split, prep, train_root)
    gen = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_set,
        config.batch_size,
        shuffle=True,
        generator=gen,
        num_workers=config.workers,
        drop_last=len(train_set) > config.batch_size,
    )
    val_loader = DataLoader(val_set, 128, num_workers=config.workers)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    best_acc, best_state, best_epoch, history = -1.0, None, 0, []
    bar = tqdm(range(config.epochs), desc=f"training {config.arch}", disable=not progress_bar)
    for epoch in bar:
        loss = _one_epoch(model, train_loader, optimiser, dev)
        val_acc = evaluate_accuracy(model, val_loader, dev) if len(val_set) else float("nan")
        record = {"epoch": epoch + 1, "loss": loss, "val_accuracy": val_acc}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{val_acc:.1f}%")
        if progress:
            progress(epoch + 1, config.epochs, record)
        if not len(val_set) or val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch + 1
            best_state = copy.deepcopy(model.state_dict())

    model.load_state_dict(best_state)
    info = {
        "arch": config.arch,
        "class_names": classes,
        "img_size": config.img_size,
        "mean": prep.mean,
        "std": prep.std,
        # how images become the model's input: nero evaluate / score feed it the same way
        "preprocessing": {**prep.record(), "field_of_view": _statuses(train_set, val_set)},
        "best_epoch": best_epoch,
        "val_accuracy": best_acc,
        "train": asdict(config),
        "history": history,
        "init_weights": str(init_weights) if init_weights else None,
        "unreadable": {**train_set.failures, **val_set.failures},
        "nero_version": __version__,
    }
    _save(model, Path(out), info)
    return info


def _datasets(
    config: TrainConfig, split: Split, prep: Preprocessing, train_root: Path
) -> tuple[DecodedImages, DecodedImages]:
    """The training and validation images (stratified split), decoded once."""
    tr_idx, val_idx = stratified_split(split.labels, config.val_fraction, config.seed)
    paths = np.asarray(split.paths, object)
    train_set = DecodedImages(
        list(paths[tr_idx]), split.labels[tr_idx], prep, augmentation(config.augment, prep)
    )
    val_set = DecodedImages(
        list(paths[val_idx]), split.labels[val_idx], prep, augmentation("none", prep)
    )
    unreadable = {**train_set.failures, **val_set.failures}
    if unreadable:
        warnings.warn(
            f"skipped {len(unreadable)} unreadable training images (listed in the sidecar "
            f"JSON), e.g. {next(iter(unreadable.values()))}",
            stacklevel=3,
        )
    if len(train_set) == 0:
        raise ValueError(f"none of the training images under {train_root} could be read")
    return train_set, val_set


def _one_epoch(
    model: nn.Module, loader: DataLoader, optimiser: torch.optim.Optimizer, dev: torch.device
) -> float:
    """One pass over the training images; the mean loss."""
    amp = dev.type == "cuda"  # mixed precision on GPUs only
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, seen = 0.0, 0
    for x, y in loader:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(y)
        seen += len(y)
    return total / max(seen, 1)


def _statuses(*sets: DecodedImages) -> dict[str, int]:
    """How often each field-of-view status occurred over the training images."""
    names = dict.fromkeys(status for s in sets for status in s.statuses)
    return {status: sum(s.statuses.get(status, 0) for s in sets) for status in names}


def _save(model: nn.Module, out: Path, info: dict) -> None:
    """The weights (atomically, tensors only) and the sidecar JSON beside them."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    write_sidecar(out, info)


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = seen = 0
    for x, y in loader:
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        seen += len(y)
    return 100.0 * correct / max(seen, 1)


def _load_backbone(model: nn.Module, path: str | Path, img_size: int) -> None:
    """Local pretrained weights (e.g. ImageNet) for everything but the new head."""
    state = read_state_dict(path)
    if isinstance(state, nn.Module):
        state = state.state_dict()
    head_name, _ = find_head(model, img_size)
    state = {k: v for k, v in state.items() if not k.startswith(head_name + ".")}
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys]
    missing = [k for k in result.missing_keys if not k.startswith(head_name + ".")]
    if unexpected or missing:
        raise ValueError(
            f"{path} does not fit this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
