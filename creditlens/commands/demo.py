"""``creditlens demo``: the main job on the embedded default model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="score the bundled examples with the embedded model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("creditlens demo: not yet available (the scoring engine has not landed yet).")
    return 0
