"""``creditlens train``: a GRPO, SD or CREDIT run on an environment, logged per token (docs/training.md)."""

from __future__ import annotations

import argparse

from creditlens.choices import ALGOS
from creditlens.commands import check_model, existing_file, non_negative_int, positive_int
from creditlens.envs.registry import names as env_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train with GRPO, self-distillation or CREDIT on TRL and log every token",
        description="Train a model on an environment; the run directory holds manifest, metrics, evals, "
        "per-token tables and checkpoints. Multi-process: launch with torchrun or accelerate.",
    )
    parser.add_argument("--algo", required=True, choices=ALGOS,
                        help="grpo: the environment's outcome reward; sd: self-distillation, per-token reward "
                             "log pi_T - log pi_S; credit: SD with CREDIT's batch-contrastive baseline (config fields lam, "
                             "n_contrast, pool, form)")
    parser.add_argument("--env", required=True, choices=env_names(),
                        help="environment (creditlens envs list describes them)")
    parser.add_argument(
        "--model",
        default=None,
        help="'smollm2-135m-instruct', 'tiny', a local model directory, or a hub id already in the local "
        "Hugging Face cache; never downloaded (default: the environment's model: the warm-started model "
        "for shortcut, SmolLM2 otherwise)",
    )
    parser.add_argument("--config", type=existing_file, default=None,
                        help="YAML config, one flat mapping: creditlens' RunConfig keys and the arguments of TRL's "
                             "CreditConfig (SDPOConfig) or GRPOConfig (configs/*.yaml, docs/training.md)")
    parser.add_argument("--out", required=True, help="run directory, e.g. runs/NAME")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument("--seed", type=non_negative_int, default=None, help="override the config's seed")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="override the config's max_steps")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, value in YAML (repeatable), e.g. --set lam=0.25",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check ``--out``, the config file and the model, then train (the path to the reward:
    :func:`creditlens.training.run.train`); only then are torch and TRL imported."""
    from creditlens.runs import check_out_dir
    from creditlens.yamlfiles import read_yaml

    check_out_dir(args.out)
    if args.config is not None:
        read_yaml(args.config)  # a bad file is refused here, before torch is imported
    check_model(args.model)

    from creditlens.training.config import load_config, parse_overrides
    from creditlens.training.run import train

    overrides = parse_overrides(args.set)
    overrides.update({k: v for k, v in (("seed", args.seed), ("max_steps", args.max_steps)) if v is not None})
    config = load_config(args.config, overrides)
    run_dir = train(args.algo, args.env, args.model, config, args.out, resume=args.resume)
    print(f"creditlens train: run written to {run_dir}")
    return 0
