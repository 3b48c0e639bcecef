"""Run directories: the layout the trainer writes and ``compare``, the app and the notebooks read.

    runs/NAME/
      manifest.json                 config, seed, algo, env, model, package versions, git commit
      metrics.jsonl                 one JSON object per logged training step ("step" key required)
      eval.jsonl                    one JSON object per held-out evaluation ("step", "score")
      tokens/step_000010.parquet    the per-token table of that step's rollouts (creditlens.schema)
      checkpoints/                  trainer state for --resume (trainer-specific)

Every file is written atomically (temp file then rename) or appended one whole line at a time, so a
run killed at any moment stays readable: a partial last line of a ``.jsonl`` file is ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from creditlens import schema
from creditlens.errors import RunError

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
EVAL = "eval.jsonl"
TOKENS_DIR = "tokens"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_manifest(run_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically; returns its path."""
    path = Path(run_dir) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON record as a single line and fsync it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        file.write(json.dumps(record, default=float) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``.jsonl`` file; a partial last line (a killed write) is dropped, any other bad
    line raises :class:`RunError` naming ``file:line``."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise RunError(f"{path}:{number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise RunError(f"{path}:{number}: expected a JSON object")
        records.append(record)
    return records


def rewrite_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Replace a ``.jsonl`` file atomically (used by ``--resume`` to drop steps past a checkpoint)."""
    atomic_write_text(Path(path), "".join(json.dumps(r, default=float) + "\n" for r in records))


def token_path(run_dir: str | os.PathLike, step: int) -> Path:
    """Path of the per-token table of ``step``."""
    return Path(run_dir) / TOKENS_DIR / f"step_{int(step):06d}.parquet"


def write_step_tokens(run_dir: str | os.PathLike, step: int, table: pd.DataFrame) -> Path:
    """Validate and write one step's per-token table atomically."""
    return schema.write_token_table(table, token_path(run_dir, step))


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
        """Training metrics, one row per logged step."""
        return pd.DataFrame(read_jsonl(self.path / METRICS))

    def evals(self) -> pd.DataFrame:
        """Held-out evaluations, one row per evaluation (columns include ``step`` and ``score``)."""
        return pd.DataFrame(read_jsonl(self.path / EVAL))

    def token_steps(self) -> list[int]:
        """Steps that have a per-token table, ascending."""
        folder = self.path / TOKENS_DIR
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.parquet"))

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
    """Open a run directory; raises :class:`RunError` when ``manifest.json`` is missing or corrupt."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise RunError(f"{path}: not a run directory (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{manifest_path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(manifest, dict):
        raise RunError(f"{manifest_path}: expected a JSON object")
    return Run(path=path, manifest=manifest)


def list_runs(root: str | os.PathLike) -> list[Run]:
    """Every run directory at ``root`` or below it (``root`` itself may be a run), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root}: no such directory")
    found = sorted({p.parent for p in root.rglob(MANIFEST)})
    return [load_run(p) for p in found]
