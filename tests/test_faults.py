"""The fault catalogue: bad inputs and faults a careless or hostile user meets, one row each.

Every row asserts the exit code, that the message names the file or value at fault, and that
nothing which existed before was lost (a snapshot of every file around the case, compared
after). ``docs/RELIABILITY.md`` is the table of these rows.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nero.cli import main
from nero.model.classifier import build_model
from nero.run.directory import read_run
from tests.helpers import evaluate_args, make_folders, tiny_checkpoint


# ---------------------------------------------------------------- shared material
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """Data, a checkpoint (with its sidecar-free relative use) and one finished run."""
    root = tmp_path_factory.mktemp("faults")
    data = make_folders(root / "data")
    checkpoint = tiny_checkpoint(root / "model.pt")
    run = root / "run"
    assert main(evaluate_args(data, run, "--model", str(checkpoint))) == 0
    return {"root": root, "data": data, "checkpoint": checkpoint, "run": run}


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files given directly are hashed too)."""
    found: dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def assert_nothing_lost(before: dict[str, str]) -> None:
    lost = [p for p in before if not Path(p).is_file()]
    changed = [
        p
        for p, h in before.items()
        if p not in lost and hashlib.sha256(Path(p).read_bytes()).hexdigest() != h
    ]
    assert not lost and not changed, f"lost {lost[:3]}, changed {changed[:3]}"


@dataclass
class Case:
    """One command, what it must answer, and the files that must survive it."""

    argv: list[str]
    code: int
    message: str  # regex the output (stderr or stdout) must match
    keep: list[Path] = field(default_factory=list)
    check: Callable[[], None] | None = None


def copy_run(base: dict[str, Path], tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(base["run"], run)
    return run


def bomb_png(path: Path, width: int = 40_000, height: int = 40_000) -> None:
    """A tiny PNG whose header claims ``width``×``height`` pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def hold_stage_lock(stage: Path) -> int:
    """Lock a staging folder as a running `nero evaluate` does; returns the fd to close."""
    stage.mkdir(parents=True, exist_ok=True)
    (stage / ".writer").write_text("424242\n")
    fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


# ---------------------------------------------------------------- the rows
def out_is_the_data(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    return Case(evaluate_args(data, data), 2, r"overlaps the input folder .*data", [data])


def out_is_a_parent_of_the_data(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    return Case(evaluate_args(data, tmp), 2, r"overlaps the input folder", [data])


def out_is_inside_the_data(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    return Case(evaluate_args(data, data / "ood" / "run"), 2, r"overlaps the input folder", [data])


def out_is_a_folder_of_notes(b, tmp):
    notes = tmp / "notes"
    notes.mkdir()
    (notes / "ward-round.txt").write_text("patient 12: review Tuesday")
    return Case(evaluate_args(b["data"], notes), 2, r"notes exists and is not a NERO run", [notes])


def out_is_a_file(b, tmp):
    f = tmp / "report.pdf"
    f.write_bytes(b"%PDF-1.7 important")

    def no_hidden_copy() -> None:
        assert [p.name for p in tmp.iterdir()] == ["report.pdf"]

    return Case(evaluate_args(b["data"], f), 2, r"report.pdf is a file", [f], no_hidden_copy)


def out_is_dotdot(b, tmp, monkeypatch):
    work = tmp / "work" / "here"
    work.mkdir(parents=True)
    (tmp / "work" / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    return Case(evaluate_args(b["data"], Path("..")), 2, r"is not a NERO run", [tmp / "work"])


def out_holds_the_checkpoint(b, tmp):
    folder = tmp / "models"
    folder.mkdir()
    ckpt = folder / "model.pt"
    shutil.copy(b["checkpoint"], ckpt)
    args = evaluate_args(b["data"], folder, "--model", str(ckpt))
    return Case(args, 2, r"holds the input file .*model.pt", [folder])


def existing_run_without_overwrite(b, tmp):
    run = copy_run(b, tmp)
    return Case(evaluate_args(b["data"], run), 2, r"run already exists .*--overwrite", [run])


def existing_run_with_overwrite_is_replaced(b, tmp):
    run = copy_run(b, tmp)
    old_created = json.loads((run / "manifest.json").read_text())["created"]

    def replaced() -> None:
        new = read_run(run)  # a complete, valid run of the new evaluation
        assert new.manifest["model"]["checkpoint"] == "model.safetensors"
        assert new.manifest["created"] >= old_created
        assert not [p for p in tmp.iterdir() if p.name.startswith(".")]  # no trash left

    return Case(evaluate_args(b["data"], run, "--overwrite"), 0, r"run written to", [], replaced)


def overwrite_that_fails_keeps_the_old_run(b, tmp, monkeypatch):
    import nero.detect.nero_methods as nero_methods

    run = copy_run(b, tmp)

    def crash(*_a, **_k):
        raise RuntimeError("simulated crash while fitting")

    monkeypatch.setattr(nero_methods.NeroMethod, "fit", crash)
    return Case(evaluate_args(b["data"], run, "--overwrite"), 2, r"simulated crash", [run])


def checkpoint_replaced_after_the_run(b, tmp):
    ckpt = tmp / "model.pt"
    shutil.copy(b["checkpoint"], ckpt)
    run = tmp / "run"
    assert main(evaluate_args(b["data"], run, "--model", str(ckpt))) == 0
    recorded = read_run(run).checkpoint_sha256
    tiny_checkpoint(ckpt, seed=1)  # other weights, same path
    now = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    argv = ["heatmap", "--run", str(run), "--sample", "0", "--out", str(tmp / "h.png")]

    def scorer_refuses_too() -> None:
        from nero.run.checkpoint import ModelChangedError
        from nero.run.scoring import RunScorer

        with pytest.raises(ModelChangedError, match=now):
            RunScorer(read_run(run))

    return Case(argv, 2, rf"has changed .*{now}.*{recorded}", [run], scorer_refuses_too)


def rebind_to_different_weights_needs_the_flag(b, tmp):
    run = copy_run(b, tmp)
    other = tmp / "other.safetensors"
    from safetensors.torch import save_model

    torch.manual_seed(3)
    save_model(build_model("resnet18", 2, 32), str(other))
    argv = ["rebind", str(run), "--model", str(other)]
    return Case(argv, 2, r"different weights .*--different-weights", [run])


def relative_model_path_loads_from_anywhere(b, tmp, monkeypatch):
    work = tmp / "project"
    (work / "models").mkdir(parents=True)
    shutil.copy(b["checkpoint"], work / "models" / "m.pt")
    monkeypatch.chdir(work)
    run = tmp / "run"
    assert main(evaluate_args(b["data"], run, "--model", "models/m.pt")) == 0
    monkeypatch.chdir(tmp)  # the dashboard and `nero heatmap` run from elsewhere

    def scorer_loads() -> None:
        from nero.run.scoring import RunScorer

        assert RunScorer(read_run(run)).model is not None

    argv = ["heatmap", "--run", str(run), "--sample", "0", "--out", str(tmp / "h.png")]
    return Case(argv, 0, r"h.png: class heatmap", [work / "models"], scorer_loads)


def second_writer_on_the_same_out(b, tmp):
    out = tmp / "run"
    fd = hold_stage_lock(tmp / "run.incomplete")

    def release() -> None:
        os.close(fd)
        assert not out.exists()

    return Case(
        evaluate_args(b["data"], out), 2, r"another nero process \(pid 424242\)", [], release
    )


def disk_full_while_writing_arrays(b, tmp, monkeypatch):
    run = copy_run(b, tmp)

    def full(*_a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    args = evaluate_args(b["data"], run, "--overwrite")
    return Case(args, 2, r"not enough disk space to write .*features.npy", [run])


def decompression_bomb_among_the_images(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    bomb_png(data / "ood" / "noise" / "bomb.png")
    out = tmp / "run"

    def listed() -> None:
        unreadable = read_run(out).manifest["data"]["unreadable"]
        assert "decompression bomb" in unreadable[str(data / "ood/noise/bomb.png")]

    return Case(evaluate_args(data, out), 0, r"run written to", [data], listed)


def identical_training_images(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    first = next((data / "id_train" / "alpha").iterdir())
    for image in (data / "id_train").rglob("*.png"):
        if image != first:
            shutil.copy(first, image)
    out = tmp / "run"

    def forward_pass_kept() -> None:
        assert (tmp / "run.incomplete" / "features.npy").is_file() and not out.exists()

    return Case(evaluate_args(data, out), 2, r"identical", [data], forward_pass_kept)


def all_logits_zero(b, tmp):
    model = build_model("resnet18", 2, 32)
    torch.nn.init.zeros_(model.fc.weight)
    torch.nn.init.zeros_(model.fc.bias)
    ckpt = tmp / "zero.pt"
    torch.save(model.state_dict(), ckpt)
    args = evaluate_args(b["data"], tmp / "run", "--model", str(ckpt))
    return Case(args, 2, r"every training logit is exactly 0", [ckpt])


def class_with_one_training_image(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    for image in sorted((data / "id_train" / "beta").iterdir())[1:]:
        image.unlink()
    out = tmp / "run"

    def warned_and_finite() -> None:
        run = read_run(out)
        assert any("single training image" in w for w in run.warnings)
        assert np.isfinite(run.scores.drop(columns="index").to_numpy()).all()
        assert run.scores["nero"].max() < 1e6

    return Case(
        evaluate_args(data, out), 0, r"warning: .*single training image", [data], warned_and_finite
    )


def manifest_without_model(b, tmp):
    run = copy_run(b, tmp)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["model"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    return Case(["report", str(run)], 2, r"manifest.json has no complete \"model\" entry", [run])


def unknown_nero_parameter(b, tmp):
    args = evaluate_args(b["data"], tmp / "run", "--nero-param", "bogus=1")
    return Case(args, 2, r"unknown NERO parameter\(s\) \['bogus'\]", [])


def negative_epsilon(b, tmp):
    args = evaluate_args(b["data"], tmp / "run", "--nero-param", "epsilon=-1")
    return Case(args, 2, r"epsilon=-1: expected a finite number ≥ 0", [])


def heatmap_of_a_sample_that_is_no_longer_an_image(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    run = tmp / "run"
    assert main(evaluate_args(data, run)) == 0
    sample = Path(read_run(run).samples["path"].iloc[0])
    sample.write_text("this file was overwritten by a text editor")
    argv = ["heatmap", "--run", str(run), "--sample", "0", "--out", str(tmp / "h.png")]
    return Case(argv, 2, rf"{re.escape(sample.name)}: not an image", [run])


def non_numeric_scores(b, tmp):
    run = copy_run(b, tmp)
    scores = pd.read_csv(run / "scores.csv").astype({"nero": object})
    scores.loc[3, "nero"] = "oops"
    scores.to_csv(run / "scores.csv", index=False)
    return Case(["report", str(run)], 2, r"scores.csv: column 'nero' holds non-numeric", [run])


def scores_of_random_bytes(b, tmp):
    run = copy_run(b, tmp)
    (run / "scores.csv").write_bytes(np.random.default_rng(0).bytes(4096))
    return Case(["report", str(run)], 2, r"scores.csv is not a readable CSV", [run])


def animated_and_rotated_images(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    frames = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 200, 0))]
    gif = data / "ood" / "noise" / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° to view
    photo = data / "ood" / "noise" / "portrait.jpg"
    Image.new("RGB", (40, 24), (90, 90, 200)).save(photo, exif=exif)
    out = tmp / "run"

    def noted() -> None:
        samples = read_run(out).samples.set_index("path")
        assert "first frame" in samples.loc[str(gif), "notes"]
        assert "EXIF orientation" in samples.loc[str(photo), "notes"]

    return Case(evaluate_args(data, out), 0, r"run written to", [data], noted)


def training_with_a_damaged_image(b, tmp):
    data = tmp / "data"
    shutil.copytree(b["data"], data)
    bomb_png(data / "id_train" / "alpha" / "bomb.png")
    out = tmp / "m.pt"
    argv = ["train", "--data", str(data), "--epochs", "1", "--img-size", "32", "--out", str(out)]

    def listed() -> None:
        sidecar = json.loads(out.with_suffix(".json").read_text())
        assert "decompression bomb" in sidecar["unreadable"][str(data / "id_train/alpha/bomb.png")]

    return Case(argv, 0, r"skipped 1 unreadable images \(listed in the sidecar", [data], listed)


def abandoned_stage_folders_are_cleaned(b, tmp):
    root = tmp / "runs"
    root.mkdir()
    shutil.copytree(b["run"], root / "done")
    old = root / "old.incomplete"
    old.mkdir()
    np.save(old / "features.npy", np.zeros((3, 4), np.float32))
    fd = hold_stage_lock(root / "busy.incomplete")
    foreign = root / "mine.incomplete"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("not nero's")

    def cleaned() -> None:
        os.close(fd)
        assert not old.exists() and (root / "busy.incomplete").is_dir()

    argv = ["runs", str(root), "--clean"]
    message = r"old.incomplete +abandoned.* removed(.|\n)*mine.incomplete .*left in place"
    return Case(argv, 0, message, [root / "done", foreign], cleaned)


CASES = [
    out_is_the_data,
    out_is_a_parent_of_the_data,
    out_is_inside_the_data,
    out_is_a_folder_of_notes,
    out_is_a_file,
    out_is_dotdot,
    out_holds_the_checkpoint,
    existing_run_without_overwrite,
    existing_run_with_overwrite_is_replaced,
    overwrite_that_fails_keeps_the_old_run,
    checkpoint_replaced_after_the_run,
    rebind_to_different_weights_needs_the_flag,
    relative_model_path_loads_from_anywhere,
    second_writer_on_the_same_out,
    disk_full_while_writing_arrays,
    decompression_bomb_among_the_images,
    identical_training_images,
    all_logits_zero,
    class_with_one_training_image,
    manifest_without_model,
    unknown_nero_parameter,
    negative_epsilon,
    heatmap_of_a_sample_that_is_no_longer_an_image,
    non_numeric_scores,
    scores_of_random_bytes,
    animated_and_rotated_images,
    training_with_a_damaged_image,
    abandoned_stage_folders_are_cleaned,
]


def run_case(case: Case, base: dict[str, Path], capsys) -> None:
    """Run one row: exit code, message, no traceback, one error line, nothing lost, its check."""
    before = snapshot(*case.keep, base["data"], base["checkpoint"], base["run"])
    capsys.readouterr()
    code = main(case.argv)
    out = capsys.readouterr()
    said = out.err + out.out
    assert code == case.code, said
    assert re.search(case.message, said), said
    assert "Traceback" not in said
    if code == 2:  # bad input: one line saying so
        assert len([line for line in out.err.splitlines() if ": error: " in line]) == 1
    assert_nothing_lost(before)
    if case.check is not None:
        case.check()


@pytest.mark.parametrize("fault", CASES, ids=lambda f: f.__name__)
def test_fault(fault, base, tmp_path, monkeypatch, capsys):
    params = fault.__code__.co_varnames[: fault.__code__.co_argcount]
    case = fault(base, tmp_path, monkeypatch) if "monkeypatch" in params else fault(base, tmp_path)
    run_case(case, base, capsys)
