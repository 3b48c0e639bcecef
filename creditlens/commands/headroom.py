"""``creditlens headroom``: does the feedback-conditioned model beat the student on an environment?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from creditlens.commands import check_model, device_name, existing_file, non_negative_int, positive_int
from creditlens.envs.registry import names as env_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("headroom", help="student vs feedback-conditioned teacher pass rates of a model")
    parser.add_argument("--env", required=True, choices=env_names(), help="environment")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="'smollm2-135m-instruct', 'tiny' or a local path")
    parser.add_argument("--n", type=positive_int, default=64, help="problems (default 64)")
    parser.add_argument("--config", type=existing_file,
                        help="YAML with HeadroomConfig fields (a training config works)")
    parser.add_argument("--seed", type=non_negative_int, help="override the config's seed")
    parser.add_argument("--device", type=device_name, default="cpu",
                        help="torch device: 'cpu' (default), 'cuda', 'cuda:N' or 'mps'")
    parser.add_argument("--out", type=Path, help="write headroom.json, attempts.jsonl and tokens.parquet here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from creditlens import runs
    from creditlens.yamlfiles import read_yaml

    if args.out is not None:
        runs.check_out_dir(args.out)
    if args.config is not None:
        read_yaml(args.config)  # a bad file is refused here, before torch is imported
    check_model(args.model)

    from creditlens import envs, headroom, models

    models.check_device(args.device)
    overrides = {} if args.seed is None else {"seed": args.seed}
    config = headroom.load_headroom_config(args.config, overrides)
    env = envs.get(args.env, **config.env_args)
    model, tokenizer = models.load(args.model, device=args.device)
    headroom.check_model(tokenizer, args.model)
    summary, attempts, tokens = headroom.headroom(env, model, tokenizer, args.n, config, progress=not args.no_progress)
    summary["model"] = args.model
    if args.out is not None:
        headroom.write(args.out, summary, attempts, tokens)
    print(json.dumps(runs.jsonable(summary), indent=1) if args.json else headroom.format_table(summary))
    return 0
