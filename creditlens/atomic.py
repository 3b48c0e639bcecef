"""Writing a file whole: creditlens' one way to replace a file so that no reader ever sees half of it.

Run directories (:mod:`creditlens.runs`), token tables (:mod:`creditlens.schema`) and checkpoints use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` whole: ``write(tmp)`` fills a temp file beside it, which is fsynced and renamed over
    ``path`` (mode 0666 minus the umask, like any new file). On error nothing is left behind and an
    existing ``path`` is unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
