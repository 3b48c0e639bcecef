"""One writer per run directory: an ``fcntl.flock`` on ``RUN_DIR/.lock``, held for the whole run.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, OOM kill, a crash), so a
stale ``.lock`` left by a killed process is simply taken over; the file only says who holds it, and a
holder that ends normally removes it. A second
``train`` (or ``--resume``) on a live run is refused with one line naming the holder's PID. A start that
fails before its first logged step removes what it created (a directory it made, the manifest, the
start model, checkpoints), so the rerun is not refused as "a run already exists".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from creditlens import runs
from creditlens.errors import RunError

LOCK = ".lock"


def holder(run_dir: Path) -> str:
    """Who holds the lock of ``run_dir`` as its ``.lock`` says: "PID 123" ("PID 123 on HOST" for another
    host), or "an unknown process"."""
    try:
        pid, _, host = (run_dir / LOCK).read_text(encoding="utf-8").strip().partition(" ")
    except OSError:
        return "an unknown process"
    return f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive lock; RunError when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise RunError(f"--out {path.parent}: cannot lock {path} ({error.strerror}); "
                               "choose an --out on a file system with file locks") from None
            raise RunError(f"--out {path.parent}: another creditlens process ({holder(path.parent)}) is writing "
                           "this run; wait for it to end or stop it, then retry") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file a finishing holder unlinked after we opened it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (creating the directory if needed).

    If the block fails before any step was logged, everything the block created in ``run_dir`` is removed
    again (and ``run_dir`` itself when this call made it), so a failed start can simply be rerun.
    """
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in run_dir.iterdir()}
    fd = _acquire(run_dir / LOCK)
    try:
        yield
    except BaseException:
        if not _logged_a_step(run_dir):
            _remove_new(run_dir, before | {LOCK})
        raise
    finally:
        with contextlib.suppress(OSError):  # unlinked while held: a waiter that opened it retries (_acquire)
            (run_dir / LOCK).unlink()
            if made:
                run_dir.rmdir()  # only when empty
        os.close(fd)


def _logged_a_step(run_dir: Path) -> bool:
    try:
        return bool(runs.read_jsonl(run_dir / runs.METRICS))
    except (OSError, ValueError):
        return True  # unreadable logs are not this start's to delete


def _remove_new(run_dir: Path, keep: set[str]) -> None:
    """Delete every entry of ``run_dir`` whose name is not in ``keep``."""
    for path in run_dir.iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
