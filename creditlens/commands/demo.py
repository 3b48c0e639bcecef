"""``creditlens demo``: score the bundled triples with the embedded model, then open the dashboard.

The scored set goes to ``OUT/demo-scored``; the small real GRPO / SD / CREDIT runs of ``data/runs``
are copied beside it, so the dashboard opens on both.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from creditlens.commands import app
from creditlens.commands.score import score_file
from creditlens.models import DEFAULT_MODEL

DATA = Path(__file__).resolve().parents[2] / "data"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="score the bundled examples with the embedded model, open the app")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="where the scored set goes (default runs/)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model to score with (default {DEFAULT_MODEL})")
    parser.add_argument("--gap-samples", type=int, default=0, help="M samples for the pMI check page (0: skip)")
    parser.add_argument("--port", type=int, default=8501, help="dashboard port on localhost (0: a free one)")
    parser.add_argument("--no-app", action="store_true", help="score only, do not start the dashboard")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    examples = DATA / "examples.jsonl"
    if not examples.is_file():
        raise FileNotFoundError(f"{examples}: bundled examples not found (run from a source checkout)")
    options = argparse.Namespace(
        examples=examples, model=args.model, contrast=2, lam=0.5, pool="mean", seed=0,
        batch_size=16, gap_samples=args.gap_samples, device="cpu", out=args.out / "demo-scored",
    )
    tokens, summary = score_file(options)
    print(f"creditlens demo: scored {examples.name} with {args.model}\n  per-token table: {tokens}\n"
          f"  per-example summary: {summary}")
    if (DATA / "runs").is_dir():
        shutil.copytree(DATA / "runs", args.out / "bundled-runs", dirs_exist_ok=True)
        print(f"  bundled GRPO / SD / CREDIT runs: {args.out / 'bundled-runs'}")
    if args.no_app:
        return 0
    return app.run(argparse.Namespace(runs_dir=str(args.out), port=args.port, host="localhost"))
