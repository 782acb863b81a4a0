"""Writing a run safely: where it may go, one writer at a time, and nothing half-written.

``--out`` never replaces anything that is not a NERO run (recognised by its manifest), never
the input data or a folder holding it, and an existing run only on request. The run is
assembled in ``<out>.incomplete`` under an exclusive lock and renamed into place when complete;
a failed evaluation leaves that folder for the next attempt to reuse, and :func:`remove_stage`
(``nero runs --clean``) cleans abandoned ones.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from nero.run.directory import INCOMPLETE_SUFFIX
from nero.run.reviews import carry_reviews, keep_late_reviews

WRITER_FILE = ".writer"  # pid of the process holding a staging folder's lock
# What an evaluation writes into its staging folder (anything else there is not ours).
STAGE_SUFFIXES = (".npy", ".npz", ".json", ".csv", ".safetensors", ".joblib", ".png")


class OutputError(ValueError):
    """``--out`` points somewhere a run must not be written (nothing was touched)."""


class RunLockedError(RuntimeError):
    """Another process is writing the same run."""


def is_nero_run(path: Path) -> bool:
    """A folder this tool wrote: its ``manifest.json`` is ours (format version and model)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "format_version" in manifest and "model" in manifest


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_output(
    out: str | Path,
    data_roots: Sequence[str | Path] = (),
    keep: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """The absolute run folder for ``out``, or :class:`OutputError` before anything is written.

    Refused: a folder that holds (or is, or lies inside) an input data folder; a folder that
    holds a file to ``keep`` (the checkpoint); an existing file; an existing folder that is
    not a NERO run; an existing run unless ``overwrite``.
    """
    out = Path(os.path.abspath(Path(out).expanduser()))  # "runs/.." → its real parent
    real = out.resolve()
    if real == Path(real.anchor) or real == Path.home().resolve():
        raise OutputError(f"--out {out} is the root or home folder; give a run folder")
    for root in data_roots:
        root = Path(root).resolve()
        if _contains(real, root) or _contains(root, real):
            raise OutputError(
                f"--out {out} overlaps the input folder {root}; write the run elsewhere "
                "(nero never writes into, or replaces, its input data)"
            )
    for path in keep:
        if _contains(real, Path(path).resolve()):
            raise OutputError(f"--out {out} holds the input file {path}; write the run elsewhere")
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; give the real folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(
                f"--out {out} is a file; a run is a folder, and nero never replaces other files"
            )
        if any(out.iterdir()):
            if not is_nero_run(out):
                raise OutputError(
                    f"--out {out} exists and is not a NERO run (no manifest.json of ours); "
                    "nero never deletes it: choose another --out"
                )
            if not overwrite:
                raise OutputError(
                    f"a run already exists at {out}; pass --overwrite to replace it (the old "
                    "run is removed only once the new one is complete)"
                )
    stage = stage_path(out)
    if stage.exists() and not stage.is_dir():
        raise OutputError(f"{stage} is a file; move it away so the run can be staged there")
    return out


def stage_path(out: Path) -> Path:
    """Where a run is assembled before it is renamed to ``out``."""
    return out.with_name(out.name + INCOMPLETE_SUFFIX)


# Lock descriptors held by this process. A forked child (a data-loading worker) closes its
# copies at once: a flock belongs to the open file, so a worker outliving a killed writer
# would otherwise keep the lock, and the re-run would be refused for its lifetime.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        with suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


@contextmanager
def writer_lock(stage: Path, instead: str = "choose another --out") -> Iterator[None]:
    """An exclusive lock on the staging folder; a second writer is refused, naming the first."""
    fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    _HELD_LOCKS.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_writer(stage)
            raise RunLockedError(
                f"{stage} is being written by another nero process (pid {holder}); wait for it "
                f"to finish or stop it, or {instead}"
            ) from None
        (stage / WRITER_FILE).write_text(f"{os.getpid()}\n")
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # releases the lock


def _read_writer(stage: Path) -> str:
    try:
        return (stage / WRITER_FILE).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def stage_is_locked(stage: Path) -> bool:
    """True while a process holds the writer lock of a staging folder."""
    try:
        fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def staged_run(
    out: str | Path,
    data_roots: Sequence[str | Path] = (),
    keep: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Iterator[Path]:
    """A locked staging folder that becomes ``out`` only when the block succeeds.

    ``out`` is checked first (:func:`check_output`): nothing that is not a NERO run is ever
    replaced, and a run only with ``overwrite``, after the new one is complete. On failure
    the staging folder is kept as ``<out>.incomplete`` (no reader mistakes it for a run), so
    arrays already computed are not lost; the next attempt reuses them.
    """
    out = check_output(out, data_roots, keep, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = stage_path(out)
    stage.mkdir(exist_ok=True)
    with writer_lock(stage):
        yield stage
        # Checked again: another run may have been written there meanwhile.
        check_output(out, data_roots, keep, overwrite)
        (stage / WRITER_FILE).unlink(missing_ok=True)
        if out.exists() and any(out.iterdir()):
            # Reviewers' marks are nobody's output to recompute: they move to the new run.
            carried = carry_reviews(out, stage)
            _keep_batches(out, stage)
            trash = out.with_name(f".{out.name}.replaced-{os.getpid()}-{time.time_ns()}")
            out.rename(trash)
            stage.rename(out)
            keep_late_reviews(trash, out, carried)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            stage.rename(out)  # replaces an empty folder


def _keep_batches(old_run: Path, new_run: Path) -> None:
    """Images scored against the replaced run keep their tables, set aside in the new run
    (``batches.replaced-TIME/``; the worklist does not list them: the detector changed)."""
    batches = old_run / "batches"
    if batches.is_dir() and any(batches.iterdir()):
        batches.rename(new_run / f"batches.replaced-{time.strftime('%Y%m%dT%H%M%S')}")


@dataclass(frozen=True)
class AbandonedStage:
    """A ``<run>.incomplete`` folder a failed or interrupted evaluation left behind."""

    path: Path
    size_bytes: int
    modified: float  # POSIX time
    locked: bool  # a process is writing it right now


def abandoned_stages(root: str | Path) -> list[AbandonedStage]:
    """Staging folders directly under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.endswith(INCOMPLETE_SUFFIX) and not p.is_symlink():
            files = [f for f in p.rglob("*") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            found.append(AbandonedStage(p, size, p.stat().st_mtime, stage_is_locked(p)))
    return sorted(found, key=lambda s: s.modified)


def remove_stage(stage: AbandonedStage) -> None:
    """Delete an abandoned staging folder (never one being written, never anything else)."""
    if stage.locked or stage_is_locked(stage.path):
        raise RunLockedError(f"{stage.path} is being written by pid {_read_writer(stage.path)}")
    unknown = [
        f
        for f in stage.path.rglob("*")
        if f.is_file() and f.suffix not in STAGE_SUFFIXES and f.name != WRITER_FILE
    ]
    if unknown:
        raise OutputError(
            f"{stage.path} holds files nero does not write ({unknown[0].name}, …); "
            "left in place: remove it yourself"
        )
    shutil.rmtree(stage.path)
