"""Class-folder data sets and their loader (images decode in :mod:`nero.data.images`, become
model inputs in :mod:`nero.data.preprocess`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nero.data.images import ImageReadError, decode_image, is_image
from nero.data.preprocess import Preprocessing


class DataError(ValueError):
    """A data folder is missing, empty or laid out wrongly."""


@dataclass(frozen=True)
class Split:
    """One named group of samples: ``id_train``, ``id_test`` or ``ood:NAME``."""

    name: str
    root: Path
    paths: list[Path]
    labels: np.ndarray  # class index, -1 for OOD


@dataclass
class Collection:
    """Every split of an evaluation, in the order rows are written."""

    class_names: list[str]
    splits: list[Split] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [p for s in self.splits for p in s.paths]

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([s.labels for s in self.splits]) if self.splits else np.zeros(0, int)

    @property
    def split_names(self) -> list[str]:
        return [s.name for s in self.splits for _ in s.paths]


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive), sorted for a deterministic order."""
    return sorted(p for p in root.rglob("*") if is_image(p))


def class_folders(root: str | Path) -> list[str]:
    """Sorted class-folder names, as torchvision's ImageFolder indexes them."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{root} has no class sub-folders (expected {root}/<class>/*.jpg)")
    return names


def class_folder_split(name: str, root: str | Path, class_names: Sequence[str]) -> Split:
    """Images of ``root/<class>/``; every class must be a folder with at least one image."""
    root = Path(root)
    found = class_folders(root)
    missing = [c for c in class_names if c not in found]
    extra = [c for c in found if c not in class_names]
    if missing or extra:
        raise DataError(
            f"class folders of {root} do not match the model's classes: "
            f"missing {missing}, unexpected {extra}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for index, cls in enumerate(class_names):
        images = list_images(root / cls)
        if not images:
            raise DataError(f"class folder {root / cls} contains no images")
        paths += images
        labels += [index] * len(images)
    return Split(name, root, paths, np.asarray(labels, np.int64))


def ood_split(name: str, root: str | Path) -> Split:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"OOD folder {root} (set {name!r}) does not exist")
    images = list_images(root)
    if not images:
        raise DataError(f"OOD folder {root} (set {name!r}) contains no images")
    return Split(f"ood:{name}", root, images, np.full(len(images), -1, np.int64))


def prepared_collection(data_dir: str | Path) -> Collection:
    """The prepared layout: ``id_train/<class>``, ``id_test/<class>``, ``ood/<set>/**``."""
    data_dir = Path(data_dir)
    for sub in ("id_train", "id_test", "ood"):
        if not (data_dir / sub).is_dir():
            raise DataError(
                f"{data_dir} is not a prepared data folder: {data_dir / sub} is missing "
                "(expected id_train/<class>/, id_test/<class>/, ood/<set>/)"
            )
    classes = class_folders(data_dir / "id_train")
    ood_sets = {p.name: p for p in sorted((data_dir / "ood").iterdir()) if p.is_dir()}
    if not ood_sets:
        raise DataError(f"{data_dir / 'ood'} has no OOD set folders")
    return explicit_collection(data_dir / "id_train", data_dir / "id_test", ood_sets, classes)


def explicit_collection(
    id_train: str | Path,
    id_test: str | Path,
    ood: dict[str, str | Path],
    class_names: Sequence[str] | None = None,
) -> Collection:
    classes = list(class_names) if class_names is not None else class_folders(id_train)
    splits = [
        class_folder_split("id_train", id_train, classes),
        class_folder_split("id_test", id_test, classes),
    ]
    splits += [ood_split(name, root) for name, root in ood.items()]
    return Collection(classes, splits)


# ------------------------------------------------------------------ decoding
class ImageListDataset(Dataset):
    """Images by path; an unreadable file yields a zero tensor and its error, not an exception.

    Items are ``(tensor, index, error, note)``: ``error`` is empty for a readable image,
    ``note`` says what decoding and preprocessing changed (EXIF rotation, a field of view that
    was not found, …).
    """

    def __init__(self, paths: Sequence[Path], preprocessing: Preprocessing) -> None:
        self.paths = list(paths)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str, str]:
        try:
            decoded = decode_image(self.paths[index])
        except ImageReadError as exc:
            side = self.preprocessing.img_size
            return torch.zeros(3, side, side), index, str(exc), ""
        tensor, note = self.preprocessing.tensor_and_note(decoded.image)
        return tensor, index, "", "; ".join(n for n in (decoded.note, note) if n)


def make_loader(
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    batch_size: int,
    workers: int | None = None,
) -> DataLoader:
    """Deterministic order; decoding in worker processes overlaps with the forward pass."""
    if workers is None:
        workers = min(2, torch.get_num_threads()) if len(paths) > 4 * batch_size else 0
    return DataLoader(
        ImageListDataset(paths, preprocessing),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
