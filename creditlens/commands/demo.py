"""``creditlens demo``: score the bundled triples with the embedded SmolLM2 model into ``runs/demo-scored``."""

from __future__ import annotations

import argparse
from pathlib import Path

from creditlens.commands.score import score_file
from creditlens.models import DEFAULT_MODEL

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples.jsonl"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="score the bundled examples with the embedded model")
    parser.add_argument("--out", type=Path, default=Path("runs") / "demo-scored", help="output directory")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not EXAMPLES.is_file():
        raise FileNotFoundError(f"{EXAMPLES}: bundled examples not found (run from a source checkout)")
    options = argparse.Namespace(
        examples=EXAMPLES, model=DEFAULT_MODEL, contrast=2, lam=0.5, pool="mean", seed=0,
        batch_size=16, gap_samples=0, device="cpu", out=args.out,
    )
    tokens, summary = score_file(options)
    print(f"creditlens demo: scored {EXAMPLES.name} with {DEFAULT_MODEL}\n  per-token table: {tokens}\n"
          f"  per-example summary: {summary}")
    return 0
