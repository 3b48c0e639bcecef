"""``creditlens score``: per-token SD / CREDIT table and per-example summary of a JSONL file of triples."""

from __future__ import annotations

import argparse
from pathlib import Path

from creditlens.commands import non_negative_int, positive_int, unit_float
from creditlens.errors import ConfigError, InputError
from creditlens.models import DEFAULT_MODEL, TINY_MODEL

OUTPUTS = ("tokens.parquet", "summary.parquet", "summary.csv")  # what `creditlens score --out DIR` writes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="score (prompt, feedback, response) triples with a causal LM")
    parser.add_argument("examples", type=Path, help="JSONL file, one {prompt, feedback, response, ...} per line")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"{DEFAULT_MODEL!r} (embedded), {TINY_MODEL!r} or a local model directory; never "
                             f"downloaded (default {DEFAULT_MODEL})")
    parser.add_argument("--contrast", type=non_negative_int, default=None,
                        help="K contrast inputs per example, n_contrast of creditlens.credit.CreditSpec (0: plain SD; "
                             "default: CreditSpec's)")
    parser.add_argument("--feedback-contrast", type=non_negative_int, default=0,
                        help="K other examples' feedback texts per example: the feedback axis (x, f_j, y), "
                             "docs/CREDIT-MATH.md section 8 (0: none)")
    parser.add_argument("--lam", type=unit_float, default=None, help="CREDIT lambda in [0, 1] (default: CreditSpec's)")
    parser.add_argument("--pool", default=None, help="contrast pooling, mean or logmeanexp (default: CreditSpec's)")
    parser.add_argument("--form", default=None,
                        help="CREDIT reward form, one of creditlens.credit.FORMS (docs/CREDIT-MATH.md, section 4; "
                             "default: CreditSpec's)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the contrast choice and gap sampling")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="sequences per forward pass")
    parser.add_argument("--gap-samples", type=non_negative_int, default=0,
                        help="M samples for the compatibility gap (0: skip)")
    parser.add_argument("--device", default="cpu",
                        help="torch device to score on: 'cpu' (default), 'cuda', 'cuda:N' or 'mps'")
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory; an earlier score result there is replaced whole")
    parser.set_defaults(run=run)


def score_file(args: argparse.Namespace) -> tuple[Path, Path]:
    """Score ``args.examples`` into ``args.out``; returns the token-table and summary paths.

    ``--out``, ``--device`` and the examples file are checked before the model loads or anything is written.
    """
    import pandas as pd

    from creditlens import models, runs, schema, stats
    from creditlens.cache import staged_dir
    from creditlens.contexts import as_example, read_examples
    from creditlens.credit import CreditSpec
    from creditlens.gap import GapConfig, compatibility_gap, summary_with_gap
    from creditlens.scoring import Scorer

    runs.check_out_dir(args.out)
    foreign = sorted(p.name for p in args.out.iterdir() if p.name not in OUTPUTS) if args.out.is_dir() else []
    if foreign:
        raise InputError(f"--out {args.out}: holds {foreign[0]!r}, not a `creditlens score` output; choose a new or "
                         f"empty directory (an earlier score result there is replaced whole)")
    models.check_device(args.device)
    options = {"n_contrast": "--contrast", "lam": "--lam", "pool": "--pool", "form": "--form"}
    given = {name: getattr(args, option[2:]) for name, option in options.items()}
    try:
        spec = CreditSpec(**{name: value for name, value in given.items() if value is not None})
    except ConfigError as error:  # CreditSpec names its field; the user typed the option
        field, _, why = str(error).partition(": ")
        raise InputError(f"{options[field]}: {why}") from None
    rows = read_examples(args.examples)
    examples = [as_example(r, i) for i, r in enumerate(rows)]
    for option, k, distinct in (("--contrast", spec.n_contrast, {e.prompt_id for e in examples}),
                                ("--feedback-contrast", args.feedback_contrast, {e.feedback for e in examples})):
        if k > len(distinct) - 1:  # refused before the model loads
            what = "prompt ids" if option == "--contrast" else "feedback texts"
            raise InputError(f"{option}: n_contrast={k} needs {k + 1} distinct {what} (an example's own is never its "
                             f"contrast), {args.examples} holds {len(distinct)}; lower {option} or add examples")
    model, tokenizer = models.load(args.model, device=args.device)
    scorer = Scorer(model, tokenizer, batch_size=args.batch_size)
    table = scorer.score(rows, spec, seed=args.seed, feedback_contrast=args.feedback_contrast)
    if args.gap_samples:
        gap = compatibility_gap(scorer, rows, table, GapConfig(samples=args.gap_samples, seed=args.seed))
        summary = summary_with_gap(table, gap)
    else:
        summary = schema.example_summary(table)
    summary = summary.assign(form=spec.form, lam=spec.lam, pool=spec.pool, n_contrast=spec.n_contrast,
                             n_feedback_contrast=args.feedback_contrast)
    shares = (("input", spec.n_contrast, "generic_share"), ("feedback", args.feedback_contrast, "feedback_generic_share"))
    for axis, k, column in shares:
        if k:  # the generic share of each response along each scored axis
            share = stats.generic_share_by_example(table, axis).rename(column)
            summary = summary.merge(share, left_on="example_id", right_index=True, how="left")
    extra = [c for c in ("kind", "source") if any(c in r for r in rows)]
    if extra:
        meta = pd.DataFrame([{"example_id": str(r.get("example_id", i)), **{c: r.get(c) for c in extra}} for i, r in enumerate(rows)])
        summary = summary.merge(meta, on="example_id", how="left")
    with staged_dir(args.out, OUTPUTS[0], replace=True) as staging:  # never a mix of old and new files
        schema.write_token_table(table, staging / OUTPUTS[0])
        summary.to_parquet(staging / OUTPUTS[1], index=False)
        summary.to_csv(staging / OUTPUTS[2], index=False)
    return args.out / OUTPUTS[0], args.out / OUTPUTS[1]


def run(args: argparse.Namespace) -> int:
    tokens, summary = score_file(args)
    print(f"per-token table: {tokens}\nper-example summary: {summary} (+ summary.csv)")
    return 0
