"""A run's classifier: loaded one way for every entry point, and only with the run's own weights.

The manifest records the checkpoint's path and sha256. Every load checks the file against that
hash: a replaced checkpoint would silently change verdicts and heatmaps, so it is refused with
both hashes named, until the user re-binds the run (:func:`rebind_model`).
"""

from __future__ import annotations

import errno
import functools
from datetime import datetime, timezone
from pathlib import Path

import torch

from nero.data.preprocess import DEFAULT_IMG_SIZE, Preprocessing
from nero.files import write_json
from nero.model.classifier import CheckpointError, LoadedModel, load_classifier, sha256_of
from nero.run.directory import Run, read_run


class ModelChangedError(CheckpointError):
    """The checkpoint file is not the one the run was made with."""


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def file_digest(path: Path) -> str:
    """sha256 of a file, hashed again only when its size or modification time changes."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


def run_img_size(run: Run) -> int:
    return int(run.manifest.get("img_size") or DEFAULT_IMG_SIZE)


def run_preprocessing(run: Run) -> Preprocessing:
    """How the run fed its model: the manifest's record; a run from before the record
    existed used the plain square resize."""
    record = run.manifest.get("preprocessing")
    if isinstance(record, dict):
        return Preprocessing.from_record(record)
    return Preprocessing(run_img_size(run), "none")


def verified_checkpoint(run: Run) -> Path:
    """The run's checkpoint file, after checking it is the one the run was made with."""
    path = run.checkpoint_path
    if path is None:
        raise CheckpointError(f"{run.path / 'manifest.json'} names no model checkpoint")
    if not path.is_file():
        raise CheckpointError(
            f"the run's model file {path} is missing; put it back, or point the run at its new "
            f"place with `nero rebind {run.path} --model NEW_PATH`"
        )
    expected = run.checkpoint_sha256
    actual = file_digest(path)
    if expected and actual != expected:
        raise ModelChangedError(
            f"the run's model file {path} has changed since the run was made (sha256 now "
            f"{actual}, recorded {expected}); its scores and heatmaps would not belong to this "
            "run. Put the original file back, re-run `nero evaluate`, or accept the new weights "
            f"with `nero rebind {run.path} --model {path} --different-weights`"
        )
    return path


@functools.lru_cache(maxsize=4)
def _load(
    path: str, sha: str, arch: str, n_classes: int, img_size: int, channels_last: bool
) -> LoadedModel:
    loaded = load_classifier(arch, path, n_classes, img_size)
    if channels_last:
        loaded.model.to(memory_format=torch.channels_last)
    return loaded


def load_run_model(run: Run, channels_last: bool = False) -> LoadedModel:
    """The run's classifier in eval mode, checked against the recorded sha256, kept loaded.

    ``channels_last``: a copy in the channels-last memory format (~20 % faster convolutions
    on CPU, the same numbers up to float rounding), used for attribution.
    """
    path = verified_checkpoint(run)
    model = run.manifest["model"]
    return _load(
        str(path.resolve()),
        file_digest(path),
        model["arch"],
        len(model["class_names"]),
        run_img_size(run),
        channels_last,
    )


def rebind_model(
    run_path: str | Path, checkpoint: str | Path, different_weights: bool = False
) -> str:
    """Point a run at a checkpoint file; returns what was done, in one sentence.

    The same weights in another place are accepted as they are. Different weights are
    refused unless ``different_weights``: the run then records the change, and a warning the
    dashboard shows, because its stored scores came from the old weights.
    """
    run = read_run(run_path)
    try:
        path = Path(checkpoint).expanduser().resolve(strict=True)
    except RuntimeError:  # Python 3.11 reports a loop this way
        raise FileNotFoundError(f"--model {checkpoint}: a symlink loop, not a file") from None
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else "no such file"
        raise FileNotFoundError(f"--model {checkpoint}: {reason}, not a checkpoint") from None
    model = run.manifest["model"]
    # Loading checks the architecture and class count before anything is written.
    load_classifier(model["arch"], path, len(model["class_names"]), run_img_size(run))
    digest = file_digest(path)
    previous = run.checkpoint_sha256
    manifest = dict(run.manifest)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if digest != previous:
        if not different_weights:
            raise ModelChangedError(
                f"{path} holds different weights (sha256 {digest}) from the ones the run was "
                f"made with ({previous}); re-run `nero evaluate` with it, or pass "
                "--different-weights to keep the old scores with the new model"
            )
        manifest["warnings"] = [
            *manifest.get("warnings", []),
            f"{when}: the model was re-bound to different weights ({path}, sha256 "
            f"{digest[:12]}…); scores were computed with sha256 {str(previous)[:12]}…, "
            "heatmaps now use the new weights",
        ]
    manifest["model"] = {**model, "checkpoint": str(path), "checkpoint_sha256": digest}
    manifest["model"]["rebound"] = [
        *model.get("rebound", []),
        {"from": model.get("checkpoint"), "sha256": previous, "at": when},
    ]
    write_json(run.path / "manifest.json", manifest)
    if digest == previous:
        return f"{run.path} now loads its model from {path} (the same weights)"
    return f"{run.path} now loads different weights from {path}; the change is recorded"
