"""GPU recipe check: ~20 steps of GRPO, SD and CREDIT on SmolLM2-135M and on a random Qwen2.5-0.5B-shaped model.

For each model and algorithm one short ``creditlens train`` run (in this process) on the science env;
prints and writes to ``OUT/gpu_real_lm.json`` the median step time (``time_step`` of ``metrics.jsonl``,
first step dropped as warm-up), the peak CUDA memory of the run, and the CREDIT/SD and SD/GRPO step-time
and peak-memory ratios. The Qwen-shaped model has Qwen2.5-0.5B's layer sizes (24 layers, hidden 896, 14/2
heads, MLP 4864, vocab 151936, tied embeddings) with random bf16 weights and SmolLM2's tokenizer (its ids
fit the larger vocabulary), since no weights can be downloaded; it shows cost, not learning.

    python benchmarks/gpu_real_lm.py --out $OUT            # on one GPU, ~6 minutes
    python benchmarks/gpu_real_lm.py --tiny --out /tmp/g    # CPU check of the script: tiny model, 2 steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from creditlens import models  # noqa: E402
from creditlens.training.run import train  # noqa: E402

ALGOS = ("grpo", "sd", "credit")
GPU_CONFIG = dict(max_steps=20, num_prompts=8, num_generations=4, max_completion_length=64, learning_rate=1e-6,
                  bf16=True, lam=0.25, n_contrast=1, n_eval_problems=8, eval_every=1000, save_steps=1000,
                  log_tokens_every=10, log_kl=False)
TINY_CONFIG = dict(max_steps=2, num_prompts=2, num_generations=2, max_completion_length=8, lam=0.25,
                   n_contrast=1, n_eval_problems=2, eval_every=1000, save_steps=1000, log_kl=False)


def qwen_shaped(out: Path) -> Path:
    """Save a random-weight model of Qwen2.5-0.5B's shape with SmolLM2's tokenizer into ``out``."""
    tokenizer = AutoTokenizer.from_pretrained(models.embedded_model_dir())
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1e6, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def one_run(algo: str, model: str, settings: dict, out: Path) -> dict:
    """Train ``algo`` for ``settings['max_steps']`` steps; median step time (s) and peak memory (GiB)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_dir = train(algo, "science", model, settings, out / f"{algo}-{Path(model).name}")
    wall = time.perf_counter() - start
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [s["time_step"] for s in steps[1:]] or [s["time_step"] for s in steps]
    return {"algo": algo, "steps": len(steps), "step_s": statistics.median(times), "wall_s": wall,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            "generation_s": statistics.median(s["time_generation"] for s in steps),
            "contrast_s": statistics.median(s["time_contrast"] for s in steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and gpu_real_lm.json")
    parser.add_argument("--tiny", action="store_true", help="CPU check: the tiny model, 2 steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = TINY_CONFIG if args.tiny else GPU_CONFIG
    with tempfile.TemporaryDirectory() as scratch:
        targets = ["tiny"] if args.tiny else [models.DEFAULT_MODEL, str(qwen_shaped(Path(scratch) / "qwen2.5-0.5b-shape"))]
        report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                  "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "config": settings, "models": {}}
        for target in targets:
            rows = {algo: one_run(algo, target, settings, args.out) for algo in ALGOS}
            ratios = {f"{a}/{b} {key}": rows[a][key] / rows[b][key]
                      for a, b in (("credit", "sd"), ("sd", "grpo")) for key in ("step_s", "peak_gib")}
            report["models"][Path(target).name] = {"runs": rows, "ratios": ratios}
            for row in rows.values():
                print(f"{Path(target).name:24s} {row['algo']:7s} step {row['step_s']:.3f} s  peak {row['peak_gib']:.2f} GiB")
            print("  " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    (args.out / "gpu_real_lm.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
