"""Run directories: the layout the trainer writes and ``compare``, the app and the notebooks read.

    runs/NAME/
      manifest.json                 config, seed, algo, env, model, package versions, git commit
      metrics.jsonl                 one JSON object per logged training step ("step" key required)
      eval.jsonl                    one JSON object per held-out evaluation ("step", "score")
      tokens/step_000010.parquet    the per-token table of that step's rollouts (creditlens.schema)
      checkpoints/                  trainer state for --resume (trainer-specific)
      start_model/                  the start model when it was built for this run (--model tiny)

Every file is written atomically (temp file then rename) or appended one whole line at a time, so a
run killed at any moment stays readable: a partial last line of a ``.jsonl`` file is ignored.
:func:`creditlens.atomic.atomic_write` is creditlens' one way to write a file whole (the token tables use it
too), and :func:`read_jsonl` its one JSONL reader (examples files too): a bad line raises an error naming
``file:line``. JSON has no NaN, so non-finite numbers are written as ``null``.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from creditlens import schema
from creditlens.atomic import atomic_write_text
from creditlens.errors import CreditlensError, InputError, RunError

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
EVAL = "eval.jsonl"
TOKENS_DIR = "tokens"
CHECKPOINTS_DIR = "checkpoints"
START_MODEL_DIR = "start_model"


TOKEN_FILE = re.compile(r"step_(\d+)\.parquet")
def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, without creating anything, that ``path`` can be (or already is) a directory this process
    writes into; raises :class:`InputError` naming ``option`` and the path otherwise."""
    path = Path(path).expanduser()
    if path.is_symlink() and not path.exists():
        raise InputError(f"{option} {path}: a symbolic link to {os.readlink(path)}, which does not exist; create "
                         "that directory or give another path")
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: an existing file, not a directory; give a directory path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, so no directory can be made under it")
    read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    if read_only or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {existing} is not writable{' (read-only file system)' if read_only else ''}; "
                         f"choose another {option}")
    return path


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become None (JSON has no NaN), numpy / torch scalars
    become Python numbers."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        return jsonable(value.item())
    return jsonable(float(value))


def json_line(record: dict[str, Any]) -> str:
    """One JSONL line (with its newline) for ``record``; NaN and inf are written as ``null``."""
    return json.dumps(jsonable(record), allow_nan=False) + "\n"


def write_manifest(run_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically; returns its path."""
    path = Path(run_dir) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON record as a single line and fsync it (NaN and inf become ``null``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json_line(record)
    with open(path, "a", encoding="utf-8") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())


BAR_BYTES = 16 << 20  # a JSONL file this large is read with a progress bar when the caller names one


def read_jsonl_lines(
    path: str | os.PathLike, partial_last_line: bool = True, error: type[CreditlensError] = RunError,
    progress: str | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-blank line of a ``.jsonl`` file ([] when it does not exist).

    A line that is not UTF-8, not JSON, nested too deeply to parse or not a JSON object raises ``error``
    naming ``file:line``; with ``partial_last_line`` an unreadable last line without a newline (a killed
    append) is dropped instead. The file is read line by line (a pipe such as ``<(zcat x.gz)`` works too);
    where only its gzip copy ``path.gz`` exists (an archived run, :func:`creditlens.study.archive`), that is
    read. ``progress`` names a tqdm bar shown for files of ``BAR_BYTES`` or more.
    """
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".gz").is_file():
        path = path.with_name(path.name + ".gz")
    if not path.exists():
        return []
    if path.is_dir():
        raise error(f"{path}: a directory, expected a JSONL file")
    records = []
    size = path.stat().st_size if path.is_file() and path.suffix != ".gz" else 0  # the bar counts read bytes
    with _open_lines(path, error) as handle, _bar(progress, size) as bar:
        for number, raw in enumerate(handle, start=1):
            bar.update(len(raw))
            cut_short = partial_last_line and not raw.endswith(b"\n")
            raw = raw.removesuffix(b"\n") if number > 1 else raw.removesuffix(b"\n").removeprefix(b"\xef\xbb\xbf")
            try:  # (a UTF-8 byte-order mark is not content)
                line = raw.decode("utf-8")
            except UnicodeDecodeError as why:
                if cut_short:
                    break
                raise error(f"{path}:{number}: not UTF-8 text (byte {raw[why.start]:#04x} at column {why.start + 1}); "
                            "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as why:
                if cut_short:
                    break
                raise error(f"{path}:{number}: not valid JSON ({why.msg} at column {why.colno})") from None
            except RecursionError:
                raise error(f"{path}:{number}: JSON nested too deeply to read") from None
            if not isinstance(record, dict):
                raise error(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
    return records


def _open_lines(path: Path, error: type[CreditlensError]):
    """A binary handle on ``path``'s lines; a ``.gz`` file is decompressed whole first (archived logs are
    small), and one that is not gzip raises ``error`` naming it."""
    if path.suffix != ".gz":
        return open(path, "rb")
    try:
        return io.BytesIO(gzip.decompress(path.read_bytes()))
    except (gzip.BadGzipFile, EOFError, zlib.error) as why:
        raise error(f"{path}: not a readable gzip file ({why})") from None


def _bar(desc: str | None, size: int):
    """A tqdm bar over ``size`` bytes named ``desc``, or a no-op one (no name, or a small file)."""
    from tqdm.auto import tqdm

    return tqdm(total=size, desc=desc, unit="B", unit_scale=True, leave=False, disable=desc is None or size < BAR_BYTES)


def read_jsonl(
    path: str | os.PathLike, partial_last_line: bool = True, error: type[CreditlensError] = RunError
) -> list[dict[str, Any]]:
    """Records of a ``.jsonl`` file; bad lines raise ``error`` naming ``file:line`` (see :func:`read_jsonl_lines`)."""
    return [record for _, record in read_jsonl_lines(path, partial_last_line, error)]


def rewrite_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Replace a ``.jsonl`` file atomically (used by ``--resume`` to drop steps past a checkpoint)."""
    atomic_write_text(Path(path), "".join(json_line(r) for r in records))


def token_path(run_dir: str | os.PathLike, step: int) -> Path:
    """Path of the per-token table of ``step`` (a whole number >= 0)."""
    if int(step) != step or step < 0:
        raise RunError(f"{run_dir}: step {step!r} must be a whole number >= 0")
    return Path(run_dir) / TOKENS_DIR / f"step_{int(step):06d}.parquet"


def write_step_tokens(run_dir: str | os.PathLike, step: int, table: pd.DataFrame) -> Path:
    """Validate and write one step's per-token table atomically."""
    return schema.write_token_table(table, token_path(run_dir, step))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_records(path: Path, number_fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Records of ``path`` with a whole-number ``step`` >= 0 and numbers (or null) in ``number_fields``."""
    records = []
    for line, record in read_jsonl_lines(path):
        step = record.get("step")
        if not (_is_number(step) and float(step).is_integer() and step >= 0):
            what = "has no 'step'" if "step" not in record else f"has 'step': {step!r}, expected a whole number >= 0"
            raise RunError(f"{path}:{line}: the record {what}")
        for name in number_fields:
            if name in record and record[name] is not None and not _is_number(record[name]):
                raise RunError(f"{path}:{line}: {name!r} must be a number, got {record[name]!r}")
        records.append({**record, "step": int(step)})
    return records


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame; a column of numbers and nulls (NaN written as null) becomes float with NaN."""
    frame = pd.DataFrame(records)
    for name in frame.columns:
        if pd.api.types.is_object_dtype(frame[name]) and all(value is None or _is_number(value) for value in frame[name]):
            frame[name] = frame[name].astype(float)
    return frame


MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "algo": (str,), "env": (str,), "model": (str, type(None)), "model_path": (str, type(None)),
    "model_digest": (str, type(None)),
    "seed": (int, type(None)), "config": (dict,),
}
"""Manifest fields that are checked when present (``config`` may be absent, not null)."""


@dataclass(frozen=True)
class Run:
    """A run directory, read lazily: ``metrics()``, ``evals()``, ``tokens(step)``."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def algo(self) -> str:
        return str(self.manifest.get("algo", "?"))

    @property
    def env(self) -> str:
        return str(self.manifest.get("env", "?"))

    @property
    def model(self) -> str:
        """The ``--model`` given, else the name of the resolved model directory (an env's default)."""
        if self.manifest.get("model"):
            return str(self.manifest["model"])
        path = self.manifest.get("model_path")
        return Path(path).name if path else "?"

    @property
    def seed(self) -> int | None:
        return self.manifest.get("seed")

    def metrics(self) -> pd.DataFrame:
        """Training metrics, one row per logged step (``null`` values read as NaN)."""
        return _frame(_checked_records(self.path / METRICS, ()))

    def evals(self) -> pd.DataFrame:
        """Held-out evaluations, one row per evaluation (columns include ``step`` and ``score``)."""
        return _frame(_checked_records(self.path / EVAL, ("score",)))

    def token_steps(self) -> list[int]:
        """Steps that have a per-token table, ascending; a stray ``.parquet`` name raises :class:`RunError`."""
        folder = self.path / TOKENS_DIR
        if not folder.is_dir():
            return []
        steps = []
        for file in sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")):
            match = TOKEN_FILE.fullmatch(file.name)
            if match is None:
                raise RunError(f"{file}: not a per-token table name (expected {TOKENS_DIR}/step_NNNNNN.parquet); "
                               f"move it out of {folder}")
            steps.append(int(match.group(1)))
        return sorted(steps)

    def tokens(self, step: int | None = None) -> pd.DataFrame:
        """The validated per-token table of ``step``, or of every step when None."""
        if step is not None:
            return schema.read_token_table(token_path(self.path, step))
        steps = self.token_steps()
        if not steps:
            raise RunError(f"{self.path}: no per-token tables under {TOKENS_DIR}/")
        return pd.concat([self.tokens(s) for s in steps], ignore_index=True)

    def best_score(self) -> float | None:
        evals = self.evals()
        return None if evals.empty or "score" not in evals else float(evals["score"].max())

    def final_score(self) -> float | None:
        evals = self.evals()
        return (
            None
            if evals.empty or "score" not in evals
            else float(evals.sort_values("step")["score"].iloc[-1])
        )


def load_run(path: str | os.PathLike) -> Run:
    """Open and check a run directory: its manifest, the ``step`` and ``score`` of every record of
    ``metrics.jsonl`` / ``eval.jsonl`` and the names under ``tokens/``. Anything damaged raises
    :class:`RunError` naming the file (and line)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise RunError(f"{path}: not a run directory (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RunError(f"{manifest_path}: not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise RunError(f"{manifest_path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise RunError(f"{manifest_path}: JSON nested too deeply to read") from None
    if not isinstance(manifest, dict):
        raise RunError(f"{manifest_path}: expected a JSON object")
    for key, kinds in MANIFEST_FIELDS.items():
        if key in manifest and (not isinstance(manifest[key], kinds) or isinstance(manifest[key], bool)):
            expected = " or ".join("null" if k is type(None) else {"dict": "an object"}.get(k.__name__, k.__name__)
                                   for k in kinds)
            raise RunError(f"{manifest_path}: {key!r} must be {expected}, got {json.dumps(manifest[key])}")
    run = Run(path=path, manifest=manifest)
    run.metrics()
    run.evals()
    run.token_steps()
    return run


def list_runs(root: str | os.PathLike) -> list[Run]:
    """Every run directory at ``root`` or below it (``root`` itself may be a run), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root}: no such directory")
    found = sorted({p.parent for p in root.rglob(MANIFEST)})
    return [load_run(p) for p in found]
