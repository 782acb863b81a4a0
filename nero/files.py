"""Writing files without ever leaving a torn one: atomic replacement and reserved array space.

Every file the engine writes goes through here. A write either completes and replaces the
old file in one ``rename``, or leaves the old file untouched; a full disk is reported as a
:class:`DiskFullError` naming the file, before anything is half-written.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

# Zero-filling in blocks of this size where the filesystem cannot reserve space directly.
FILL_BLOCK = 1 << 24
_NO_FALLOCATE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """Not enough disk space to write a file; the message names the file and the size."""


def _disk_full(path: Path, nbytes: int, exc: OSError) -> DiskFullError:
    return DiskFullError(
        exc.errno,
        f"not enough disk space to write {path} ({nbytes / 2**20:.1f} MiB needed): "
        f"{os.strerror(exc.errno or errno.ENOSPC)}; free some space and run the command again "
        "(what was computed before is kept)",
    )


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` that replaces it only when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise _disk_full(path, 0, exc) from exc
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` atomically (no pickles: plain arrays only)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def reserve(path: str | Path, nbytes: int, start: int = 0) -> None:
    """Make sure bytes ``start``..``nbytes`` of ``path`` own real disk blocks (no sparse holes).

    A memory-mapped write into a hole of a sparse file dies of SIGBUS when the disk fills;
    with the blocks reserved up front, a full disk is an ordinary, named error here.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            os.posix_fallocate(fd, start, max(nbytes - start, 1))
            return
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise _disk_full(path, nbytes, exc) from exc
            if exc.errno not in _NO_FALLOCATE:
                raise
        # The filesystem cannot reserve: write the zeros ourselves (an ENOSPC surfaces here).
        os.lseek(fd, start, os.SEEK_SET)
        remaining = nbytes - start
        block = bytes(min(FILL_BLOCK, max(remaining, 1)))
        try:
            while remaining > 0:
                remaining -= os.write(fd, block[: min(remaining, len(block))])
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise _disk_full(path, nbytes, exc) from exc
            raise
    finally:
        os.close(fd)


def allocate_npy(path: str | Path, dtype: Any, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` file of ``shape``, its disk space reserved, open for writing by rows."""
    path = Path(path)
    array = open_memmap(path, "w+", dtype, shape)
    header, size = array.offset, array.offset + array.nbytes
    del array
    try:
        reserve(path, size, start=header)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return open_memmap(path, "r+")


def release_pages(*arrays: np.ndarray | None) -> None:
    """Write memory-mapped arrays' pages out and drop them from this process's resident set.

    The data stay in the file (and the kernel's page cache); the next read maps them back. A
    streamed pass calls this after each chunk so its resident memory stays flat however large
    the array grows: a shared file mapping's touched pages otherwise count as ours until the
    map is closed. Arrays that are not memory-mapped are left alone.
    """
    for node in arrays:
        while node is not None:
            handle = getattr(node, "_mmap", None)
            if handle is not None:
                if node.mode in ("r+", "w+"):
                    handle.flush()
                handle.madvise(mmap.MADV_DONTNEED)
                break
            node = getattr(node, "base", None)
