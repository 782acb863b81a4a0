"""`nero dashboard`: builds the demo run on first start, then serves on loopback only."""

from pathlib import Path

import pytest

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
    assert built == [root / "demo"] and served == [(None, root, 8600, "127.0.0.1", [], False)]
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


OIDC = """[auth]
redirect_uri = "https://ward.example/oauth2callback"
cookie_secret = "s3cret"
client_id = "nero"
client_secret = "abc"
server_metadata_url = "https://idp.example/.well-known/openid-configuration"
"""


def test_beyond_loopback_needs_a_complete_oidc_configuration_or_no_auth(tmp_path):
    from nero.serve import access_mode

    secrets = tmp_path / "secrets.toml"
    assert access_mode("127.0.0.1", False, [secrets]) == "loopback"
    with pytest.raises(ValueError, match="needs sign-in: no .streamlit/secrets.toml"):
        access_mode("0.0.0.0", False, [secrets])
    assert access_mode("0.0.0.0", True, [secrets]) == "open"
    secrets.write_text(OIDC.replace('client_secret = "abc"\n', ""))
    with pytest.raises(ValueError, match="lacks .*client_secret"):
        access_mode("0.0.0.0", False, [secrets])
    secrets.write_text(OIDC)
    assert access_mode("0.0.0.0", False, [secrets]) == "oidc"
    named = OIDC.replace("client_id", "[auth.ward]\nclient_id").replace("[auth]\n", "[auth]\n", 1)
    secrets.write_text(named)  # a named provider section serves too
    assert access_mode("0.0.0.0", False, [secrets]) == "oidc"
    secrets.write_text("[auth\n")
    with pytest.raises(ValueError, match="cannot be read"):
        access_mode("0.0.0.0", False, [secrets])


def test_the_access_mode_reaches_the_app():
    cmd = streamlit_command(None, Path("runs"), 8501, "0.0.0.0", ["ward.lan"], "oidc")
    assert cmd[cmd.index("--access") + 1] == "oidc" and cmd.index("--access") > cmd.index("--")
