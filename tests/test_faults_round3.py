"""Round 3 of the fault catalogue: ``nero score`` (folders, globs, videos, ``--fps``,
``--into``), ``nero rebind``, ``--engine ray``'s address and the dashboard's uploads.

Each row asserts the exit code, a message naming the file or value, no traceback, and that
every file around the case is byte-for-byte unchanged (the harness of ``test_faults.py``).
``docs/RELIABILITY.md``'s round-3 table lists these rows.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nero.cli import main
from nero.model.classifier import build_model
from nero.run.batches import read_batch, run_batches
from nero.run.directory import read_run
from tests.test_faults import (  # noqa: F401
    Case,
    assert_nothing_lost,
    base,
    copy_run,
    run_case,
    snapshot,
)
from tests.test_score import write_video

ROOT = Path(__file__).resolve().parents[1]


def score(run: Path, *inputs: str | Path, into: str | None = None, fps: str | None = None):
    argv = ["score", "--run", str(run), *map(str, inputs)]
    argv += ["--into", into] if into is not None else []
    return argv + (["--fps", fps] if fps is not None else [])


def batch_check(run: Path, name: str, rows: int, unreadable: int = 0):
    def check() -> None:
        assert name in run_batches(read_run(run))
        assert len(read_batch(read_run(run), name)) == rows
        info = json.loads((run / "batches" / name / "batch.json").read_text())
        assert len(info["unreadable"]) == unreadable
        assert not (run / "batches" / f".{name}.incomplete").exists()

    return check


# ---------------------------------------------------------------- nero score
def score_folder_glob_and_video(b, tmp):
    run = copy_run(b, tmp)
    write_video(tmp / "clip.mp4", seconds=1.0)
    pattern = str(b["data"] / "ood" / "gr*" / "*.png")
    argv = score(run, b["data"] / "id_test" / "alpha", pattern, tmp / "clip.mp4", into="mixed")
    # 5 + 4 images and 5 frames at the default 5 per second
    return Case(argv, 0, r"scored 14 of 14 images", [run], batch_check(run, "mixed", 14))


def score_corrupt_zero_byte_and_mislabelled_videos(b, tmp):
    run = copy_run(b, tmp)
    write_video(tmp / "good.mp4", seconds=1.0)
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "noise.avi").write_bytes(np.random.default_rng(0).bytes(4096))
    Image.new("RGB", (16, 16), (200, 60, 60)).save(tmp / "photo.png")
    (tmp / "photo.png").rename(tmp / "really-a-png.mov")  # mislabelled: an image
    (tmp / "good.mp4").read_bytes()
    (tmp / "clip.jpg").write_bytes((tmp / "good.mp4").read_bytes())  # mislabelled: a video
    inputs = [tmp / n for n in ("good.mp4", "empty.mp4", "noise.avi", "clip.jpg")]
    argv = score(run, *inputs, into="videos")
    message = (
        r"skipped .*empty.mp4: .*not a video this tool can read(.|\n)*"
        r"skipped .*noise.avi: .*(not a video|no frame|decoding failed)(.|\n)*scored 5 of 8"
    )
    return Case(argv, 0, message, [run, *inputs], batch_check(run, "videos", 5, unreadable=3))


def score_only_unreadable_videos(b, tmp):
    run = copy_run(b, tmp)
    (tmp / "empty.mp4").write_bytes(b"")
    argv = score(run, tmp / "empty.mp4", into="nothing")

    def nothing_left() -> None:
        assert not (run / "batches" / "nothing").exists()
        assert run_batches(read_run(run)) == []

    return Case(
        argv, 2, r"no frame could be read from the videos: .*empty.mp4", [run], nothing_left
    )


@pytest.mark.parametrize("fps", ["0", "-5", "nan", "inf"])
def test_fps_that_is_not_a_rate_is_refused(fps, base, tmp_path, capsys):  # noqa: F811
    run = copy_run(base, tmp_path)
    write_video(tmp_path / "clip.mp4", seconds=0.5)
    before = snapshot(run)
    assert main(score(run, tmp_path / "clip.mp4", into="x", fps=fps)) == 2
    said = capsys.readouterr().err
    assert f"--fps {float(fps)}: expected a positive number of frames per second" in said
    assert "Traceback" not in said
    assert_nothing_lost(before)
    assert not (run / "batches" / "x").exists()


def score_with_a_huge_fps_takes_every_frame(b, tmp):
    run = copy_run(b, tmp)
    write_video(tmp / "clip.mp4", seconds=1.0)  # 10 frames
    argv = score(run, tmp / "clip.mp4", into="every", fps="1e12")
    return Case(argv, 0, r"scored 10 of 10 images", [run], batch_check(run, "every", 10))


def score_into_an_existing_batch(b, tmp):
    run = copy_run(b, tmp)
    assert main(score(run, b["data"] / "id_test" / "alpha", into="first")) == 0
    argv = score(run, b["data"] / "id_test" / "beta", into="first")
    message = r"already has a batch named 'first'; choose another name"
    return Case(argv, 2, message, [run], batch_check(run, "first", 5))


@pytest.mark.parametrize(
    "name, said",
    [
        ("../escape", r"batch name '../escape': use letters"),
        ("a/b", r"batch name 'a/b': use letters"),
        ("/abs", r"batch name '/abs': use letters"),
        (".hidden", r"not starting with '.'"),
        ("x" * 300, r"is 300 characters; at most 100"),
    ],
)
def test_into_names_that_are_not_a_folder_name_are_refused(name, said, base, tmp_path, capsys):  # noqa: F811
    run = copy_run(base, tmp_path)
    before = snapshot(run, tmp_path.parent)
    assert main(score(run, base["data"] / "id_test" / "alpha", into=name)) == 2
    err = capsys.readouterr().err
    assert re.search(said, err) and "Traceback" not in err
    assert_nothing_lost(before)
    assert not (run / "batches").exists() or list((run / "batches").iterdir()) == []


def score_into_a_name_another_process_is_writing(b, tmp):
    from tests.test_faults import hold_stage_lock

    run = copy_run(b, tmp)
    fd = hold_stage_lock(run / "batches" / ".busy.incomplete")
    np.save(run / "batches" / ".busy.incomplete" / "features.npy", np.ones((2, 3), np.float32))

    def untouched() -> None:
        os.close(fd)
        assert (run / "batches" / ".busy.incomplete" / "features.npy").is_file()
        assert not (run / "batches" / "busy").exists()

    argv = score(run, b["data"] / "id_test" / "alpha", into="busy")
    message = r"being written by another nero process \(pid 424242\).*another --into name"
    return Case(argv, 2, message, [run], untouched)


def score_again_after_a_killed_run(b, tmp):
    """What ``kill -9`` leaves (an unlocked stage with half-written arrays) is started afresh."""
    run = copy_run(b, tmp)
    stage = run / "batches" / ".again.incomplete"
    stage.mkdir(parents=True)
    np.save(stage / "features.npy", np.full((9, 3), np.nan, np.float32))
    (stage / "scores.csv").write_text("path,nero\nhalf-written,1\n")
    (stage / ".writer").write_text("99999\n")
    argv = score(run, b["data"] / "id_test" / "alpha", into="again")
    return Case(
        argv, 0, r"scored 5 of 5 images", [run / "scores.csv"], batch_check(run, "again", 5)
    )


def rebind_to_a_checkpoint_with_other_classes(b, tmp):
    run = copy_run(b, tmp)
    torch.manual_seed(1)
    other = tmp / "three.pt"
    torch.save(build_model("resnet18", 3, 32).state_dict(), other)
    argv = ["rebind", str(run), "--model", str(other)]
    return Case(argv, 2, r"three.pt.*(3 classes|size mismatch|class)", [run, other])


def rebind_to_a_missing_file(b, tmp):
    run = copy_run(b, tmp)
    argv = ["rebind", str(run), "--model", str(tmp / "gone.pt")]
    return Case(argv, 2, r"gone.pt", [run])


def rebind_to_a_symlink_loop(b, tmp):
    run = copy_run(b, tmp)
    os.symlink(tmp / "loop-b.pt", tmp / "loop-a.pt")
    os.symlink(tmp / "loop-a.pt", tmp / "loop-b.pt")
    argv = ["rebind", str(run), "--model", str(tmp / "loop-a.pt")]
    return Case(argv, 2, r"loop-a.pt.*(symlink|Symlink|links|loop)", [run])


def ray_with_an_address_that_is_not_one(b, tmp):
    run = copy_run(b, tmp)
    argv = [*score(run, b["data"] / "id_test"), "--engine", "ray", "--address", "nowhere::x"]
    return Case(argv, 2, r"--address 'nowhere::x': .*host:port", [run])


def ray_with_an_address_nobody_answers(b, tmp):
    run = copy_run(b, tmp)
    argv = [*score(run, b["data"] / "id_test"), "--engine", "ray", "--address", "127.0.0.1:9"]
    return Case(argv, 2, r"--address '127.0.0.1:9': no Ray cluster answers there", [run])


CASES = [
    score_folder_glob_and_video,
    score_corrupt_zero_byte_and_mislabelled_videos,
    score_only_unreadable_videos,
    score_with_a_huge_fps_takes_every_frame,
    score_into_an_existing_batch,
    score_into_a_name_another_process_is_writing,
    score_again_after_a_killed_run,
    rebind_to_a_checkpoint_with_other_classes,
    rebind_to_a_missing_file,
    rebind_to_a_symlink_loop,
    ray_with_an_address_that_is_not_one,
    ray_with_an_address_nobody_answers,
]


@pytest.mark.parametrize("fault", CASES, ids=lambda f: f.__name__)
def test_round3_fault(fault, base, tmp_path, capsys):  # noqa: F811
    run_case(fault(base, tmp_path), base, capsys)


def test_two_concurrent_intos_on_one_run_keep_both(base, tmp_path):  # noqa: F811
    """Two processes score into two batches of one run at the same time: both land whole."""
    run = copy_run(base, tmp_path)
    inputs = {"left": base["data"] / "id_test", "right": base["data"] / "ood"}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nero.cli", *score(run, folder, into=name)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name, folder in inputs.items()
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    assert sorted(run_batches(read_run(run))) == ["left", "right"]
    assert len(read_batch(read_run(run), "left")) == 10
    assert len(read_batch(read_run(run), "right")) == 10  # 6 noise + 4 grey (broken skipped)


def test_a_score_killed_mid_way_loses_nothing_and_reruns(base, tmp_path):  # noqa: F811
    """``kill -9`` while a batch is scored: the run is byte-for-byte what it was, no half batch
    is listed, and the same command then completes."""
    run = copy_run(base, tmp_path)
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    n = 2500  # more than two scoring blocks: killed after the first is on disk
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    before = snapshot(run)
    argv = [sys.executable, "-m", "nero.cli", *score(run, folder, into="big")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage = run / "batches" / ".big.incomplete"
    deadline = time.monotonic() + 120
    while not (stage / "scores.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the batch finished before it could be killed"
    assert (stage / "scores.csv").is_file()  # half a batch on disk ...
    assert_nothing_lost(before)
    assert run_batches(read_run(run)) == []  # ... and not listed
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    assert len(read_batch(read_run(run), "big")) == n


# ---------------------------------------------------------------- uploads
def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _huge_png() -> bytes:
    import struct
    import zlib

    data = bytearray(_bytes(Image.new("L", (8, 8)), "PNG"))
    ihdr = data[12:29]
    ihdr[4:12] = struct.pack(">II", 20_000, 10_000)  # 200 megapixels
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def _rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return _bytes(Image.new("RGB", (40, 24), (200, 60, 60)), "JPEG", exif=exif)


def _animated() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 250, 0))]
    return _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])


UPLOADS = {
    "a PDF named .png": (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", r"not an image file this tool"),
    "200 megapixels": (_huge_png(), r"possible decompression bomb"),
    "CMYK": (_bytes(Image.new("CMYK", (16, 16), (0, 200, 200, 20)), "JPEG"), r"CMYK converted"),
    "16-bit grey": (
        _bytes(Image.fromarray(np.full((16, 16), 40000, np.uint16)), "PNG"),
        r"pixel values rescaled to 8 bits",
    ),
    "EXIF-rotated": (_rotated(), r"rotated upright by its EXIF orientation \(8\)"),
    "animated GIF": (_animated(), r"2 frames: the first frame is used"),
}


@pytest.mark.parametrize("kind", list(UPLOADS))
def test_uploads_are_read_faithfully_or_refused_by_name(kind):
    from dashboard import uploads
    from nero.data.preprocess import Preprocessing

    data, said = UPLOADS[kind]
    decoded, error = uploads.decode("upload.png", data)
    if decoded is None:
        assert re.search(said, error) and "upload.png" in error
        return
    assert error is None and re.search(said, decoded.note), decoded.note
    tensor = Preprocessing(32)(decoded.image)
    assert tensor.shape == (3, 32, 32) and torch.isfinite(tensor).all()
    if kind == "16-bit grey":  # 40000 / 65535 of full scale, not clipped to white
        assert abs(decoded.image.getpixel((0, 0))[0] - round(40000 / 65535 * 255)) <= 1
