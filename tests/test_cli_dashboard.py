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
    assert built == [root / "demo"] and served == [(None, root, 8600, "127.0.0.1", [])]
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "manifest.json").write_text("{}")
    assert main(["dashboard", "--runs-root", str(root)]) == 0  # present: not rebuilt
    assert main(["dashboard", "--runs-root", str(tmp_path / "x"), "--no-demo"]) == 0
    assert main(["dashboard", str(root / "demo"), "--runs-root", str(tmp_path / "y")]) == 0
    assert len(built) == 1 and len(served) == 4


def options(cmd: list[str]) -> dict[str, list[str]]:
    """``--key value`` pairs of a streamlit command line (repeated keys kept in order)."""
    opts: dict[str, list[str]] = {}
    pairs = cmd[cmd.index("--server.port") : cmd.index("--")]
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        opts.setdefault(key, []).append(value)
    return opts


def test_server_binds_loopback_and_never_looks_outside():
    cmd = streamlit_command(Path("runs/demo"), Path("runs"), 8501)
    opts = {k: v[-1] for k, v in options(cmd).items()}
    assert opts["--server.address"] == "127.0.0.1"  # also skips the external-IP lookup
    assert opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.headless"] == "true"
    assert cmd[-2:] == ["--run", "runs/demo"]


def test_only_loopback_host_names_are_served_unless_named():
    cmd = streamlit_command(None, Path("runs"), 8501)
    assert options(cmd)["--server.allowedHosts"] == [
        "localhost",
        "127.0.0.1",
        "::1",
    ]
    exposed = streamlit_command(None, Path("runs"), 8501, "0.0.0.0", ["ward-pc.lan"])
    assert "ward-pc.lan" in options(exposed)["--server.allowedHosts"]
    assert options(exposed)["--server.address"] == ["0.0.0.0"]
