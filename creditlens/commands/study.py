"""``creditlens study``: the shortcut-testbed study (GRPO vs SD vs CREDIT over seeds) and its report."""

from __future__ import annotations

import argparse

from creditlens.commands import positive_int
from creditlens.study import PRESETS  # light module: the heavy imports happen inside run_study


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="run the GRPO / SD / CREDIT study on the shortcut testbed and write its report",
        description="Runs every missing run of the preset's grid through `creditlens train` (finished runs "
        "are kept), prunes checkpoints, and writes OUT/report with `creditlens compare`. Presets "
        "(docs/results.md): " + "; ".join(f"{name}: {preset.about}" for name, preset in PRESETS.items()) + ".",
    )
    parser.add_argument("--preset", choices=list(PRESETS), default="harmful-sdpo",
                        help="which grid to run (default: harmful-sdpo)")
    parser.add_argument("--out", required=True, help="folder of the run directories, e.g. runs/study")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs in parallel, one CPU thread each (default 1)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's checkpoints/")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write OUT/report over the seeds whose every run has finished")
    parser.add_argument("--archive", metavar="DEST",
                        help="after the report, copy the compact logs of OUT's whole seeds to DEST (manifests, "
                        "eval.jsonl, gzipped metrics.jsonl, the report's .md/.csv; no per-token tables), "
                        "e.g. data/study/DATE/NAME")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from creditlens.runs import check_out_dir
    from creditlens.study import archive, report, run_study

    if not args.report_only:
        check_out_dir(args.out)
        out = run_study(args.preset, args.out, jobs=args.jobs, keep_checkpoints=args.keep_checkpoints)
        print(f"creditlens study: runs in {out}, report in {out / 'report'}")
    if args.archive:  # writes the report itself, over the runs it copies
        print(f"creditlens study: compact logs in {archive(args.preset, args.out, args.archive)}")
    elif args.report_only:
        print(f"creditlens study: report in {report(args.preset, args.out)}")
    return 0
