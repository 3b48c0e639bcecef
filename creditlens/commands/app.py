"""``creditlens app [RUNS_DIR] [--port N]``: start the Streamlit dashboard on localhost."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import creditlens.app
from creditlens.commands import port_number
from creditlens.errors import InputError

APP_ENTRY = Path(creditlens.app.__file__).resolve().parent / "Runs.py"  # top-level app/, installed as creditlens.app


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("app", help="start the dashboard (runs, token credit, pMI check, live scoring)")
    parser.add_argument("runs_dir", nargs="?", default=None,
                        help="directory holding run directories and scored sets, or one per-token .parquet file "
                             "(default: $CREDITLENS_RUNS_DIR, else data/runs of a source checkout, else ./runs)")
    parser.add_argument("--port", type=port_number, default=8501, help="port on localhost; 0 picks a free one (default 8501)")
    parser.add_argument("--host", default="localhost", help="address to listen on (default localhost)")
    parser.set_defaults(run=run)


def free_port(host: str = "localhost") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(port: int, host: str = "localhost") -> int:
    """``port``, or a free one when it is 0; raises :class:`InputError` naming the port when it is taken."""
    if port == 0:
        return free_port(host)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: only a listener blocks
        try:
            sock.bind((host, port))
        except OSError as error:
            raise InputError(
                f"port {port} on {host} is busy ({error.strerror}): another dashboard may be running there; "
                "stop it, or choose another port (--port N, or PORT=N with make demo; 0 picks a free one)"
            ) from error
    return port


def streamlit_command(runs_dir: str | None, port: int, host: str) -> list[str]:
    """The ``streamlit run`` command line that serves the dashboard."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP_ENTRY), "--server.port", str(port),
               "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return command + (["--", "--runs-dir", runs_dir] if runs_dir else [])


def check_runs_dir(path: str) -> str:
    """The absolute path of what the dashboard opens: a directory, or one per-token ``.parquet`` file."""
    where = Path(path)
    if where.is_file() and where.suffix != ".parquet":
        raise InputError(f"{path!r} is a file, not a directory: pass the directory that holds the run directories "
                         "and scored sets (e.g. data/runs), or one per-token .parquet file")
    if not where.exists():
        raise FileNotFoundError(f"runs directory {path!r} does not exist")
    return str(where.resolve())


def run(args: argparse.Namespace) -> int:
    if not APP_ENTRY.is_file():
        raise FileNotFoundError(f"{APP_ENTRY}: the dashboard is missing from this installation of creditlens; "
                                "reinstall it (`pip install creditlens`, or `pip install -e .` in a clone)")
    runs_dir = None if args.runs_dir is None else check_runs_dir(args.runs_dir)
    port = check_port(args.port, args.host)
    env = dict(os.environ, **({"CREDITLENS_RUNS_DIR": runs_dir} if runs_dir else {}))
    print(f"creditlens dashboard: http://{args.host}:{port}  (runs: {runs_dir or 'default'}; Ctrl+C to stop)",
          flush=True)
    command = streamlit_command(runs_dir, port, args.host)
    os.execve(command[0], command, env)  # streamlit replaces this process: stopping it leaves no orphan
