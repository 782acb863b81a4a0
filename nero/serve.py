"""Start the Streamlit dashboard bound to the loopback interface."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def streamlit_command(run: Path | None, runs_root: Path, port: int) -> list[str]:
    """127.0.0.1 only; no usage statistics and no outside IP lookup (offline machines)."""
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--browser.serverAddress",
        "127.0.0.1",
        "--global.developmentMode",
        "false",
        "--",
        "--runs-root",
        str(runs_root),
    ]
    if run is not None:
        cmd += ["--run", str(run)]
    return cmd


def serve_dashboard(run: Path | None, runs_root: Path, port: int) -> int:
    if not APP.is_file():
        raise FileNotFoundError(f"dashboard app not found at {APP}")
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    print(f"NERO Explorer on http://127.0.0.1:{port}  (Ctrl+C stops it)")
    return subprocess.call(streamlit_command(run, runs_root, port), env=env)
