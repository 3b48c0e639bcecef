"""``creditlens demo``: score the bundled triples with the embedded model, then open the dashboard.

The scored set goes to ``OUT/demo-scored``: the per-token table of all 30 triples (K = 2 contrasts)
and a summary with the compatibility gap (pMI, gap and its standard error) of ``--gap-examples`` of
them, for the pMI check page. A fingerprint of the inputs, the options and the scoring code is kept
beside them, so a second demo with nothing changed reuses the scores. The small real GRPO / SD /
CREDIT runs of ``data/runs`` are copied beside it, so the dashboard opens on both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from creditlens.commands import app, check_model, port_number
from creditlens.errors import InputError

PACKAGE = Path(__file__).resolve().parents[1]
DATA = PACKAGE.parent / "data"
SCORING_CODE = ("scoring.py", "contexts.py", "credit.py", "gap.py", "schema.py", "models.py", "commands/demo.py")
"""Modules whose source enters the fingerprint: a change to any of them scores again."""
FINGERPRINT = "fingerprint.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="score the bundled examples with the embedded model (+ a pMI check), open the app",
        description="Scores data/examples.jsonl with K = 2 contrasts, estimates the compatibility gap of a few "
        "examples, copies the bundled runs beside them and starts the dashboard. Reuses earlier scores when "
        "the examples, options and scoring code are unchanged.")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="where the scored set goes (default runs/)")
    parser.add_argument("--model", default=None,
                        help="model to score with (default: the embedded smollm2-135m-instruct; 'tiny' for tests)")
    parser.add_argument("--gap-examples", type=int, default=4,
                        help="examples whose pMI and compatibility gap are estimated, one of each kind first "
                             "(default 4; 0 skips the pMI check)")
    parser.add_argument("--gap-samples", type=int, default=8,
                        help="M responses sampled per example to estimate log p(f|x) (default 8; >= 2 for a "
                             "standard error)")
    parser.add_argument("--gap-max-new-tokens", type=int, default=64,
                        help="length cap of each sampled response (default 64)")
    parser.add_argument("--rescore", action="store_true", help="score again even when earlier scores match")
    parser.add_argument("--port", type=port_number, default=8501, help="dashboard port on localhost (0: a free one)")
    parser.add_argument("--no-app", action="store_true", help="score only, do not start the dashboard")
    parser.set_defaults(run=run)


def gap_subset(rows: list[dict], n: int) -> list[dict]:
    """``n`` of ``rows`` for the gap estimate: the first of each ``kind`` in file order, then the next
    ones in file order."""
    firsts, seen = [], set()
    for row in rows:
        if row.get("kind") not in seen:
            seen.add(row.get("kind"))
            firsts.append(row)
    rest = [row for row in rows if not any(row is first for first in firsts)]
    return (firsts + rest)[:n]


def fingerprint(examples: Path, options: dict) -> str:
    """SHA-256 of the examples file, the scoring options and the source of :data:`SCORING_CODE`."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in (examples, *(PACKAGE / name for name in SCORING_CODE)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def score(examples: Path, out: Path, options: dict) -> None:
    """Score every example of ``examples`` into ``out/tokens.parquet`` and write ``out/summary.parquet``
    (+ ``summary.csv``) with the compatibility gap of :func:`gap_subset` of them."""
    import pandas as pd

    from creditlens import models, schema
    from creditlens.credit import CreditSpec
    from creditlens.examples import read_examples
    from creditlens.gap import GapConfig, compatibility_gap, summary_with_gap
    from creditlens.scoring import Scorer

    rows = read_examples(examples)
    model, tokenizer = models.load(options["model"])
    scorer = Scorer(model, tokenizer, batch_size=16)
    table = scorer.score(rows, seed=0, spec=CreditSpec(n_contrast=2))
    subset = gap_subset(rows, options["gap_examples"])
    if subset:
        config = GapConfig(samples=options["gap_samples"], max_new_tokens=options["gap_max_new_tokens"], seed=0)
        summary = summary_with_gap(table, compatibility_gap(scorer, subset, table, config))
    else:
        summary = schema.example_summary(table)
    meta = pd.DataFrame([{"example_id": str(r["example_id"]), "kind": r.get("kind"), "source": r.get("source")}
                         for r in rows])
    summary = summary.merge(meta, on="example_id", how="left")
    out.mkdir(parents=True, exist_ok=True)
    schema.write_token_table(table, out / "tokens.parquet")
    summary.to_parquet(out / "summary.parquet", index=False)
    summary.to_csv(out / "summary.csv", index=False)


def run(args: argparse.Namespace) -> int:
    examples = DATA / "examples.jsonl"
    if not examples.is_file():
        raise FileNotFoundError(f"{examples}: bundled examples not found (run the demo from a source checkout)")
    for name in ("gap_examples", "gap_samples", "gap_max_new_tokens"):
        if getattr(args, name) < (0 if name == "gap_examples" else 1):
            raise InputError(f"--{name.replace('_', '-')} must be >= {0 if name == 'gap_examples' else 1}, "
                             f"got {getattr(args, name)}")
    from creditlens.runs import check_out_dir

    check_out_dir(args.out)
    check_model(args.model)  # a missing local model is refused before torch is imported
    port = None if args.no_app else app.check_port(args.port)  # a busy port fails before minutes of scoring
    options = {"model": args.model or "smollm2-135m-instruct", "gap_examples": args.gap_examples,
               "gap_samples": args.gap_samples, "gap_max_new_tokens": args.gap_max_new_tokens}
    scored = args.out / "demo-scored"
    stamp = fingerprint(examples, options)
    stamp_path = scored / FINGERPRINT
    outputs = [scored / "tokens.parquet", scored / "summary.parquet"]
    reuse = (not args.rescore and stamp_path.is_file() and all(p.is_file() for p in outputs)
             and json.loads(stamp_path.read_text()).get("sha256") == stamp)
    if reuse:
        print(f"creditlens demo: reusing the scores in {scored} (examples, options and scoring code unchanged; "
              "--rescore scores again)")
    else:
        start = time.perf_counter()
        stamp_path.unlink(missing_ok=True)
        score(examples, scored, options)
        stamp_path.write_text(json.dumps({"sha256": stamp, **options}, indent=2) + "\n")
        gap = f", compatibility gap of {args.gap_examples} example(s)" if args.gap_examples else ""
        print(f"creditlens demo: scored {examples.name} with {options['model']}{gap} in "
              f"{time.perf_counter() - start:.0f} s")
    print(f"  per-token table: {outputs[0]}\n  per-example summary: {outputs[1]}")
    if (DATA / "runs").is_dir():
        shutil.copytree(DATA / "runs", args.out / "bundled-runs", dirs_exist_ok=True)
        print(f"  bundled GRPO / SD / CREDIT runs: {args.out / 'bundled-runs'}")
    if args.no_app:
        return 0
    return app.run(argparse.Namespace(runs_dir=str(args.out), port=port, host="localhost"))
