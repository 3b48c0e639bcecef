"""Peak memory of one CREDIT training step against one SD step, at a real vocabulary, in one run.

A 2-layer Llama with a 151,936-token vocabulary (Qwen's; random weights, nothing downloaded), B=8 rollouts
of T=256 response tokens. Four variants per distillation mode, each in a fresh subprocess: SD with TRL's
loss (``lam=0``, SDPOTrainer's code), SD with the row-wise loss CREDIT uses (``lam=0, sd_loss="rowwise"``),
and CREDIT (``lam=0.5``) with K=1 and K=3 contrasts. Each builds the trainer, then runs one loss + backward
on a fixed random batch (the teacher contexts and contrast contexts already built, as
``_prepare_training_batch`` leaves them). Reported: the step's own peak (peak RSS from VmHWM minus the RSS
just before the step; on a GPU, ``--device cuda``, the CUDA peak of the step), the process peak, the load
average beside each variant, and CREDIT's ratios to SD with the same (row-wise) loss, the fair comparison
of the algorithms, and to SD with TRL's loss, what a user switching from SDPOTrainer sees.

    python benchmarks/bench_train_memory.py                 # CPU RSS, sampled_token/topk_logits/full_logits
    python benchmarks/bench_train_memory.py --modes topk_logits --topk 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VARIANTS = (  # label, lam, K, sd_loss
    ("SD (TRL loss)", 0.0, 1, "trl"),
    ("SD (row-wise)", 0.0, 1, "rowwise"),
    ("CREDIT K=1", 0.5, 1, "trl"),
    ("CREDIT K=3", 0.5, 3, "trl"),
)


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (VmHWM; ``ru_maxrss`` is inherited across exec), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_model(path: Path, vocab: int, hidden: int) -> None:
    """A random 2-layer Llama of ``vocab`` tokens with the tiny byte-level tokenizer, saved to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from creditlens import models

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    models.tiny_tokenizer().save_pretrained(path)


def child(args: argparse.Namespace) -> None:
    """One variant: build the trainer, run one loss + backward, print JSON figures."""
    import torch
    from datasets import Dataset

    from creditlens.training import CreditConfig, CreditTrainer

    torch.set_num_threads(1)
    device = torch.device(args.device)
    lam = args.lam
    config = CreditConfig(
        output_dir=str(Path(args.model) / "out"),
        per_device_train_batch_size=args.batch,
        num_generations=args.batch,
        max_completion_length=args.tokens,
        distillation_mode=args.mode,
        distillation_topk=args.topk if args.mode == "topk_logits" else None,
        distillation_alpha=1.0,
        distillation_is_clip=None,
        lam=lam,
        n_contrast=args.k,
        sd_loss=args.sd_loss,
        report_to=[],
        use_cpu=device.type == "cpu",
        bf16=False,
    )
    trainer = CreditTrainer(
        args.model, lambda **kw: [0.0] * len(kw["prompts"]), config, Dataset.from_dict({"prompt": ["x"]})
    )
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    g = torch.Generator().manual_seed(0)
    b, t, p, k, v = args.batch, args.tokens, 32, args.k, args.vocab
    ids = lambda *shape: torch.randint(v, shape, generator=g).to(device)  # noqa: E731
    inputs = {
        "prompt_ids": ids(b, p),
        "prompt_mask": torch.ones(b, p, dtype=torch.long, device=device),
        "completion_ids": ids(b, t),
        "completion_mask": torch.ones(b, t, dtype=torch.long, device=device),
        "teacher_input_ids": ids(b, 2 * p + t),
        "teacher_attention_mask": torch.ones(b, 2 * p + t, dtype=torch.long, device=device),
        "self_distillation_mask": torch.ones(b, device=device),
    }
    if lam > 0:
        inputs["contrast_prompt_ids"] = ids(b, k, 2 * p)
        inputs["contrast_prompt_mask"] = torch.ones(b, k, 2 * p, dtype=torch.long, device=device)
        inputs["has_contrast"] = torch.ones(b, dtype=torch.bool, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    before_rss = rss_mib()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    result = {"lam": lam, "k": k, "sd_loss": args.sd_loss, "mode": args.mode, "loss": float(loss)}
    result["rss_before_mib"] = before_rss
    result["peak_rss_mib"] = peak_rss_mib()
    result["step_peak_mib"] = result["peak_rss_mib"] - before_rss
    if device.type == "cuda":
        result["step_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 - before
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--topk", type=int, default=100)
    parser.add_argument("--modes", nargs="+", default=["sampled_token", "topk_logits", "full_logits"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lam", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sd-loss", default="trl", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sampled_token", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_model(Path(tmp), args.vocab, args.hidden)
        for mode in args.modes:
            for label, lam, k, sd_loss in VARIANTS:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--mode",
                    mode,
                    "--model",
                    tmp,
                    "--lam",
                    str(lam),
                ]
                command += ["--k", str(k), "--sd-loss", sd_loss, "--vocab", str(args.vocab)]
                command += [
                    "--batch",
                    str(args.batch),
                    "--tokens",
                    str(args.tokens),
                    "--topk",
                    str(args.topk),
                ]
                command += ["--device", args.device]
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["load_average"] = os.getloadavg()[0]
                rows[mode, label] = row
                print(json.dumps({"variant": label, **row}), flush=True)
    print(
        f"\nB={args.batch} T={args.tokens} V={args.vocab} top-k={args.topk} device={args.device}; "
        "step peak in MiB (process peak in brackets), load average (1 min) after each variant"
    )
    print(f"{'mode':<14}" + "".join(f"{label:>22}" for label, *_ in VARIANTS))
    for mode in args.modes:
        cells = [
            f"{rows[mode, label]['step_peak_mib']:>8.0f} ({rows[mode, label]['peak_rss_mib']:>5.0f}) l{rows[mode, label]['load_average']:.1f}"
            for label, *_ in VARIANTS
        ]
        print(f"{mode:<14}" + "".join(f"{cell:>22}" for cell in cells))
    print("\nCREDIT step peak over SD's: fair (same row-wise loss) | against TRL's SD loss")
    for mode in args.modes:
        step = {label: rows[mode, label]["step_peak_mib"] for label, *_ in VARIANTS}
        print(
            f"{mode:<14} K=1 {step['CREDIT K=1'] / step['SD (row-wise)']:.2f}x  K=3 "
            f"{step['CREDIT K=3'] / step['SD (row-wise)']:.2f}x | K=1 {step['CREDIT K=1'] / step['SD (TRL loss)']:.2f}x  "
            f"K=3 {step['CREDIT K=3'] / step['SD (TRL loss)']:.2f}x   (row-wise SD loss {rows[mode, 'SD (row-wise)']['loss']:.6f}, "
            f"TRL's {rows[mode, 'SD (TRL loss)']['loss']:.6f})"
        )


if __name__ == "__main__":
    main()
