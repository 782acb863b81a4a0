"""Start the Streamlit dashboard bound to the loopback interface."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
# Streamlit options: loopback only, and nothing that reaches outside this machine.
SERVER_OPTIONS = {
    "server.address": "127.0.0.1",  # a set address also skips Streamlit's outside IP lookup
    "server.headless": "true",
    "server.maxUploadSize": "20",  # MB, the limit the upload page states
    "browser.gatherUsageStats": "false",
    "browser.serverAddress": "127.0.0.1",
    "global.developmentMode": "false",
    "client.toolbarMode": "viewer",  # no "Deploy" button
    "client.showErrorDetails": "none",  # pages show their own messages, never tracebacks
}


def streamlit_command(run: Path | None, runs_root: Path, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    for key, value in SERVER_OPTIONS.items():
        cmd += [f"--{key}", value]
    cmd += ["--", "--runs-root", str(runs_root)]
    if run is not None:
        cmd += ["--run", str(run)]
    return cmd


def serve_dashboard(run: Path | None, runs_root: Path, port: int) -> int:
    """Replace this process with the Streamlit server, so signals reach it directly."""
    if not APP.is_file():
        raise FileNotFoundError(f"dashboard app not found at {APP}")
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    print(f"NERO Explorer on http://127.0.0.1:{port}  (Ctrl+C stops it)", flush=True)
    cmd = streamlit_command(run, runs_root, port)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
