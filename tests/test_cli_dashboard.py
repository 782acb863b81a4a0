"""`nero dashboard`: builds the demo run on first start, then serves on loopback only."""

from pathlib import Path

import nero.demo
import nero.serve
from nero.cli import main
from nero.serve import streamlit_command


def test_first_start_builds_the_demo_then_serves(tmp_path, monkeypatch):
    built, served = [], []
    monkeypatch.setattr(nero.demo, "build_demo", lambda out, progress: built.append(out))
    monkeypatch.setattr(nero.serve, "serve_dashboard", lambda *a: served.append(a) or 0)
    root = tmp_path / "runs"
    assert main(["dashboard", "--runs-root", str(root), "--port", "8600"]) == 0
    assert built == [root / "demo"] and served == [(None, root, 8600)]
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "manifest.json").write_text("{}")
    assert main(["dashboard", "--runs-root", str(root)]) == 0  # present: not rebuilt
    assert main(["dashboard", "--runs-root", str(tmp_path / "x"), "--no-demo"]) == 0
    assert main(["dashboard", str(root / "demo"), "--runs-root", str(tmp_path / "y")]) == 0
    assert len(built) == 1 and len(served) == 4


def test_server_binds_loopback_and_never_looks_outside():
    cmd = streamlit_command(Path("runs/demo"), Path("runs"), 8501)
    opts = dict(
        zip(
            cmd[cmd.index("--server.port") :: 2],
            cmd[cmd.index("--server.port") + 1 :: 2],
            strict=False,
        )
    )
    assert opts["--server.address"] == "127.0.0.1"  # also skips the external-IP lookup
    assert opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.headless"] == "true"
    assert cmd[-2:] == ["--run", "runs/demo"]
