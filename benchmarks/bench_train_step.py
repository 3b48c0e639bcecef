"""Step time of CREDIT (K=1, K=3) over SD, and of SD over GRPO, measured in one run on the same batch.

The four trainers (grpo, sd, credit K=1, credit K=3) are built on the same model and environment and
fed the same prompts; before each trainer's step the RNG is reset to the same seed, so sd and credit
sample the very same rollouts. Steps run round-robin (grpo, sd, credit K=1, credit K=3, grpo, ...) and
the median over rounds is reported, which keeps the ratios stable on a busy machine. ``no_generation``
is the sum of the scoring, contrast and backward medians: the part CREDIT changes, since generation is
the same work for all four. One step is
``Trainer.training_step``: generation, scoring (verification, teacher and rollout log-prob forwards),
contrast forwards, the student forward and backward; the optimizer update, identical for all four,
is left out. The model is not updated between steps.

The floor of a CREDIT step is SD's step plus what its K contrasts must cost at least: after each CREDIT
step, the K contrast contexts it built are forwarded through the teacher again, one no-grad forward of
the whole micro-batch per contrast (TRL's ``_forward_logits``, the call SD's teacher forward makes), and
``floor = sd step + sum of those K forwards``. ``step / floor`` is reported beside the ratios; the load
average (1 minute) is printed at the start and the end of the measurement.

    python benchmarks/bench_train_step.py                      # shortcut env, tiny model, CPU
    python benchmarks/bench_train_step.py --env science --model smollm2-135m-instruct --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from trl.experimental.sdpo import SDPOTrainer  # noqa: E402

from creditlens.training.config import parse_config  # noqa: E402
from creditlens.training.run import build_trainer, check_model, materialize_model, resolve_env  # noqa: E402

VARIANTS = (("grpo", "grpo", 1), ("sd", "sd", 1), ("credit K=1", "credit", 1), ("credit K=3", "credit", 3))
PHASES = ("generation", "scoring", "contrast", "backward")
RATIO_COLUMNS = (
    "step",
    "no_generation",
    "generation",
    "scoring",
    "backward",
)  # contrast is 0 for sd and grpo


def build(args: argparse.Namespace, root: Path) -> dict:
    """The four trainers, keyed by variant label."""
    env = resolve_env(args.env, {})
    model_path = materialize_model(check_model(args.model, env), root)
    trainers = {}
    for label, algo, k in VARIANTS:
        values = dict(
            seed=args.seed,
            num_prompts=args.prompts,
            num_generations=args.generations,
            max_completion_length=args.max_tokens,
            n_contrast=k,
            n_eval_problems=1,
            log_kl=False,
            bf16=args.bf16,
        )
        run_dir = root / label.replace(" ", "").replace("=", "")
        trainer = build_trainer(algo, env, model_path, *parse_config(values, algo, run_dir / "ckpt"))
        trainer.timer.enabled = True
        trainer.current_gradient_accumulation_steps = 1
        trainer.model.train()
        trainers[label] = trainer
    return trainers


def one_step(trainer, inputs: list[dict], seed: int) -> dict[str, float]:
    """Seconds per phase of one ``training_step`` on ``inputs``."""
    torch.manual_seed(seed)
    trainer.timer.pop()
    start = trainer.timer.now()
    trainer.training_step(trainer.model, inputs, None)
    total = trainer.timer.now() - start
    trainer.model.zero_grad(set_to_none=True)
    phases = trainer.timer.pop()
    inner = phases["generation"] + phases["scoring"] + phases["contrast"]
    return {
        **{p: phases[p] for p in PHASES[:3]},
        "backward": total - inner - phases["logging"],
        "step": total - phases["logging"],
    }


def contrast_forwards(trainer) -> float:
    """Seconds of K plain no-grad teacher forwards, one per contrast, over the contrast contexts of the step
    ``trainer`` just ran (0 for a trainer without contrasts): what the K contrasts cost at least."""
    batch = trainer._buffered_inputs[0]
    if "contrast_prompt_ids" not in batch:
        return 0.0
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    start = trainer.timer.now()
    with torch.no_grad(), trainer._get_teacher_context_for_self_distillation():
        for k in range(batch["contrast_prompt_ids"].size(1)):
            SDPOTrainer._forward_logits(
                trainer,
                trainer.teacher_model,
                torch.cat([batch["contrast_prompt_ids"][:, k], completion_ids], dim=1),
                torch.cat([batch["contrast_prompt_mask"][:, k], completion_mask], dim=1),
                completion_ids.size(1),
            )
    return trainer.timer.now() - start


def measure(args: argparse.Namespace, root: Path) -> pd.DataFrame:
    """Median seconds per phase and per step (rows: variants) over ``args.rounds`` round-robin rounds, with
    the median of :func:`contrast_forwards` (``plain_contrast``) and the floor of each step."""
    trainers = build(args, root)
    inputs = next(iter(trainers["sd"].get_train_dataloader()))
    samples: dict[str, list[dict[str, float]]] = {label: [] for label in trainers}
    for round_ in range(args.rounds + args.warmup):
        for label, trainer in trainers.items():
            times = one_step(trainer, inputs, args.seed)
            times["plain_contrast"] = contrast_forwards(trainer)
            if round_ >= args.warmup:
                samples[label].append(times)
    table = pd.DataFrame({label: pd.DataFrame(rows).median() for label, rows in samples.items()}).T
    table["no_generation"] = table["scoring"] + table["contrast"] + table["backward"]
    table["floor"] = table.loc["sd", "step"] + table["plain_contrast"]
    table.loc["grpo", "floor"] = float("nan")
    return table


def ratios(table: pd.DataFrame, column: str) -> dict[str, float]:
    """The three ratios of the issue, on ``column`` of :func:`measure`'s table."""
    return {
        "credit K=1 / sd": table.loc["credit K=1", column] / table.loc["sd", column],
        "credit K=3 / sd": table.loc["credit K=3", column] / table.loc["sd", column],
        "sd / grpo": table.loc["sd", column] / table.loc["grpo", column],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="shortcut", help="environment (default: shortcut)")
    parser.add_argument("--model", default="tiny", help="model name or local directory (default: tiny)")
    parser.add_argument("--rounds", type=int, default=7, help="measured round-robin rounds")
    parser.add_argument("--warmup", type=int, default=1, help="rounds dropped before measuring")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--generations", type=int, default=2, help="rollouts per prompt")
    parser.add_argument("--max-tokens", type=int, default=32, help="max new tokens per rollout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--json", default=None, help="also write the table and ratios to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        load_before = os.getloadavg()[0]
        table = measure(args, Path(tmp))
        load_after = os.getloadavg()[0]
    pd.set_option("display.width", 160)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"\nseconds per step (median of {args.rounds} rounds after {args.warmup} warm-up) on {device}, env={args.env}, "
        f"model={args.model}, {args.prompts}x{args.generations} rollouts of <= {args.max_tokens} tokens"
    )
    print(
        f"torch threads {torch.get_num_threads()}, load average (1 min) {load_before:.2f} at the start, "
        f"{load_after:.2f} at the end"
    )
    print(table.round(4).to_string())
    for phase in RATIO_COLUMNS:
        values = ", ".join(f"{name} {value:.2f}x" for name, value in ratios(table, phase).items())
        print(f"ratios of {phase:10s}: {values}")
    floors = {
        label: table.loc[label, "step"] / table.loc[label, "floor"] for label in ("credit K=1", "credit K=3")
    }
    print(
        "step / floor (floor = sd step + K plain no-grad teacher forwards over the contrast contexts): "
        + ", ".join(f"{label} {value:.3f}" for label, value in floors.items())
        + f"  [load {load_before:.2f} -> {load_after:.2f}]"
    )
    if args.json:
        payload = {
            "args": vars(args),
            "device": device,
            "seconds": table.to_dict("index"),
            "ratios": {phase: ratios(table, phase) for phase in RATIO_COLUMNS},
            "step_over_floor": floors,
            "load_average": [load_before, load_after],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
