"""``creditlens compare``: group comparable runs across seeds; write a table and figures."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare run directories (grouped by env, model, method and config across seeds): table + figures",
        description="Groups runs that share environment, model, start weights, algo, form, lam, contrast axis, K "
        "and the rest of their config; final/best held-out score with t-intervals over seeds (Wilson for one seed), "
        "tokens and seconds to a target score, generic share of SD credit, per-token credit AUROC; writes CSV, "
        "Parquet, Markdown and PNGs.",
    )
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    parser.add_argument("--target", type=float, default=None,
                        help="score whose cost is reported (default: 0.9 x the best eval score of any run)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument("--pool", action="store_true",
                        help="group by method only (algo, form, lam, axis, K), pooling runs of different "
                             "environments, models and configs; the report states it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from creditlens.compare import compare_runs
    from creditlens.runs import check_out_dir

    check_out_dir(args.out)  # before minutes of reading runs: an existing file or unwritable --out is refused
    if not 0.0 < args.confidence < 1.0:
        raise ValueError(f"--confidence must be in (0, 1), got {args.confidence}")
    comparison = compare_runs(args.runs, target=args.target, confidence=args.confidence, pool=args.pool)
    written = comparison.save(args.out)
    comparison.show()
    print(f"\nwrote {len(written)} files to {args.out}/: " + ", ".join(p.name for p in written))
    return 0
