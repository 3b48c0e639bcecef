"""``creditlens envs``: list the environments and print sample problems."""

from __future__ import annotations

import argparse
import json

from creditlens.commands import non_negative_int, positive_int
from creditlens.envs.base import SPLITS
from creditlens.envs.registry import describe, get, names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("envs", help="list environments and show sample problems")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the environment names").set_defaults(run=run_list)
    sample = actions.add_parser("sample", help="print problems of one environment")
    sample.add_argument("name", choices=names())
    sample.add_argument("--n", type=positive_int, default=3, help="how many problems, >= 1 (default 3)")
    sample.add_argument("--split", default="train", choices=SPLITS, help="which split (default train)")
    sample.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split's order (default 0)")
    sample.add_argument("--reference", action="store_true", help="also print the hidden reference data")
    sample.set_defaults(run=run_sample)


def run_list(args: argparse.Namespace) -> int:
    for name in names():
        print(f"{name:10s} {describe(name)}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    problems = get(args.name).problems(args.split, n=args.n, seed=args.seed)
    for problem in problems:
        print(f"=== {problem.id}")
        for message in problem.prompt:
            print(f"[{message['role']}]\n{message['content']}")
        if args.reference:
            print(f"[reference]\n{json.dumps(problem.reference, indent=1, default=str)}")
        print()
    return 0
