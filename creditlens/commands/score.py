"""``creditlens score``: per-token SD / CREDIT table and per-example summary of a JSONL file of triples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from creditlens.commands import (
    check_model,
    device_name,
    existing_file,
    non_negative_int,
    positive_int,
    unit_float,
)
from creditlens.errors import ConfigError, InputError
from creditlens.models import DEFAULT_MODEL, TINY_MODEL

if TYPE_CHECKING:
    from creditlens.examples import Example

OUTPUTS = ("tokens.parquet", "summary.parquet", "summary.csv")  # what `creditlens score --out DIR` writes
SUMS = ("n_tokens", "sd_sum", "specific_sum", "shortcut_sum", "credit_sum", "generic_share", "feedback_generic_share",
        "pmi", "gap", "gap_se")
"""Columns of the per-example table printed at the end (those the summary has)."""
SHOWN_ROWS = 20  # examples printed; the rest are in summary.csv


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="score (prompt, feedback, response) triples with a causal LM")
    parser.add_argument("examples", type=existing_file, help="JSONL file, one {prompt, feedback, response, ...} per line")
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
    parser.add_argument("--device", type=device_name, default="cpu",
                        help="torch device to score on: 'cpu' (default), 'cuda', 'cuda:N' or 'mps'")
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory; an earlier score result there is replaced whole")
    parser.set_defaults(run=run)


def score_file(args: argparse.Namespace) -> tuple[Path, Path]:
    """Score ``args.examples`` into ``args.out``; returns the token-table and summary paths.

    ``--out``, the examples file and each of its lines, a ``--contrast`` / ``--feedback-contrast`` larger than the
    file allows and a ``--model`` path that does not exist are refused before torch is imported; the CREDIT
    settings and ``--device`` before the model loads.
    """
    from creditlens import runs
    from creditlens.examples import as_example

    runs.check_out_dir(args.out)
    foreign = sorted(p.name for p in args.out.iterdir() if p.name not in OUTPUTS) if args.out.is_dir() else []
    if foreign:
        raise InputError(f"--out {args.out}: holds {foreign[0]!r}, not a `creditlens score` output; choose a new or "
                         f"empty directory (an earlier score result there is replaced whole)")
    numbered = runs.read_jsonl_lines(args.examples, partial_last_line=False, error=InputError,
                                     progress="reading examples")  # read once: the file may be a pipe
    if not numbered:
        raise InputError(f"{args.examples}: holds no examples")
    rows = [row for _, row in numbered]
    examples = []
    for index, (line, row) in enumerate(numbered):
        try:
            examples.append(as_example(row, index))
        except ValueError as error:
            raise InputError(f"{args.examples}:{line}: {error}") from error
    _check_contrasts(args.examples, examples, args.contrast, args.feedback_contrast)
    check_model(args.model)

    import pandas as pd

    from creditlens import models, schema, stats
    from creditlens.cache import staged_dir
    from creditlens.credit import CreditSpec
    from creditlens.gap import GapConfig, compatibility_gap, summary_with_gap
    from creditlens.scoring import Scorer

    models.check_device(args.device)
    options = {"n_contrast": "--contrast", "lam": "--lam", "pool": "--pool", "form": "--form"}
    given = {name: getattr(args, option[2:]) for name, option in options.items()}
    try:
        spec = CreditSpec(**{name: value for name, value in given.items() if value is not None})
    except ConfigError as error:  # CreditSpec names its field; the user typed the option
        field, _, why = str(error).partition(": ")
        raise InputError(f"{options[field]}: {why}") from None
    _check_contrasts(args.examples, examples, spec.n_contrast, args.feedback_contrast)  # CreditSpec's default K
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


def _check_contrasts(path: Path, examples: list[Example], contrast: int | None, feedback_contrast: int) -> None:
    """Refuse K contrasts along an axis with fewer than K + 1 distinct prompt ids (feedback texts) in the file: an
    example's own is never its contrast. ``contrast`` None: unset."""
    prompts, feedbacks = {e.prompt_id for e in examples}, {e.feedback for e in examples}
    for option, k, distinct, what in (("--contrast", contrast, prompts, "prompt ids"),
                                      ("--feedback-contrast", feedback_contrast, feedbacks, "feedback texts")):
        if k is not None and k > len(distinct) - 1:
            raise InputError(f"{option}: n_contrast={k} needs {k + 1} distinct {what} (an example's own is never its "
                             f"contrast), {path} holds {len(distinct)}; lower {option} or add examples")


def sums_table(summary) -> str:
    """The per-example sums of a summary as aligned text: the first :data:`SHOWN_ROWS` examples, then a count."""
    shown = summary.set_index("example_id")[[c for c in SUMS if c in summary.columns]].head(SHOWN_ROWS)
    text = shown.to_string(float_format=lambda v: f"{v:+.3f}", na_rep="-")
    more = len(summary) - len(shown)
    return text + (f"\n... {more} more examples in summary.csv" if more > 0 else "")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    tokens, summary = score_file(args)
    print(f"per-token table: {tokens}\nper-example summary: {summary} (+ summary.csv)")
    print(f"\nper-example sums (nats; sd_sum = specific_sum + shortcut_sum):\n{sums_table(pd.read_parquet(summary))}")
    return 0
