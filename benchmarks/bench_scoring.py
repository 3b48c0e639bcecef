"""Benchmark the scorer against the forward passes it cannot avoid, on the same triples, in one run.

For K in (0, 1, 3) contrasts, on the same contexts (``Scorer.plan``), it times interleaved, repeated
runs (median reported) of:

- (a) ``Scorer.score`` (contexts, forward passes, table) with each engine: ``share_prefixes=False``
  (length-sorted padded batches) and ``True`` (shared prefixes run once, one sequence at a time);
  the default (``share_prefixes=None``) runs the one ``Scorer.engine`` picks, printed per K;
- (b) one unbatched forward per context, logits only at response positions, log-softmax + gather;
- (c) batched forwards over length-sorted buckets of ``rows`` contexts, each padded to its own
  longest row, logits only at response positions (the best ``rows`` of 4, 8 is reported).

Each run is timed twice: wall-clock seconds and this process's CPU seconds (``time.process_time``).
On a machine shared with other jobs the CPU seconds are the steadier figure with ``--threads 1``
(time spent waiting for a core is not counted); with more threads they also count the threads'
spin-waiting, so compare wall-clock there. The load average before and after is printed.

It prints response tokens/s, the ratios a / best(b, c), and where the scorer's time goes (contexts,
forward passes, log-softmax/gather and bookkeeping, table), plus the tokens it runs through the
model against the tokens in the contexts. ``--memory`` adds the peak CPU RSS of scoring a 4k-token
context with a 150k vocabulary (random 2-layer model), measured in subprocesses.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scoring.py --n 8 --threads 2 --repeats 3 --memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from creditlens import models
from creditlens.contexts import read_examples
from creditlens.credit import CreditSpec
from creditlens.scoring import Scorer

ROOT = Path(__file__).resolve().parents[1]
BUCKET_ROWS = (4, 8)


@torch.no_grad()
def unbatched(model, sequences: list[tuple[list[int], int]]) -> None:
    """(b): one forward per context; logits at the n positions that predict the response."""
    for ids, n in sequences:
        x = torch.tensor([ids])
        logits = model(input_ids=x, logits_to_keep=torch.arange(len(ids) - n - 1, len(ids) - 1)).logits[0]
        logits.float().log_softmax(-1).gather(-1, x[0, -n:, None])


def buckets(sequences: list[tuple[list[int], int]], rows: int) -> list[list[int]]:
    """Length-sorted groups of ``rows`` sequence indices (longest first)."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
    return [order[i : i + rows] for i in range(0, len(order), rows)]


@torch.no_grad()
def bucketed(model, sequences: list[tuple[list[int], int]], groups: list[list[int]], pad_id: int) -> None:
    """(c): right-padded forward per bucket; logits only at response positions (boolean logits_to_keep)."""
    for group in groups:
        width = len(sequences[group[0]][0])
        ids = torch.full((len(group), width), pad_id)
        attention = torch.zeros((len(group), width), dtype=torch.long)
        keep = torch.zeros((len(group), width), dtype=torch.bool)
        for row, i in enumerate(group):
            seq, n = sequences[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
            keep[row, len(seq) - n - 1 : len(seq) - 1] = True
        targets = ids[:, 1:][keep[:, :-1]]
        logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits
        logits.float().log_softmax(-1).gather(-1, targets[:, None])


def profile(scorer: Scorer, rows: list[dict], k: int) -> dict[str, float]:
    """Seconds of each stage of one ``scorer.score`` call, and tokens run through the model."""
    spent = {"contexts": 0.0, "logprobs": 0.0, "forward": 0.0, "forward_tokens": 0}
    plan, logprobs = scorer.plan, scorer.logprobs

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    def before(_module, args, kwargs):
        spent["forward_start"] = time.perf_counter()
        spent["forward_tokens"] += kwargs["input_ids"].numel()

    def after(_module, _args, _kwargs, _out):
        spent["forward"] += time.perf_counter() - spent["forward_start"]

    hooks = [scorer.model.register_forward_pre_hook(before, with_kwargs=True),
             scorer.model.register_forward_hook(after, with_kwargs=True)]
    scorer.plan, scorer.logprobs = timed("contexts", plan), timed("logprobs", logprobs)
    try:
        start = time.perf_counter()
        scorer.score(rows, spec=CreditSpec(n_contrast=k))
        spent["total"] = time.perf_counter() - start
    finally:
        del scorer.plan, scorer.logprobs
        for hook in hooks:
            hook.remove()
    return spent


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM) in MiB; unlike ``ru_maxrss`` it is not inherited across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(engine: str, context_tokens: int, response_tokens: int, vocab: int) -> None:
    """Print JSON: peak RSS (MiB) before and after scoring one long sequence with a random model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192)
    model = LlamaForCausalLM(config).eval()
    _, tokenizer = models.load(models.TINY_MODEL)
    scorer = Scorer(model, tokenizer, share_prefixes=engine == "shared", progress=False)
    ids = torch.randint(0, vocab, (context_tokens + response_tokens,)).tolist()
    scorer.logprobs([(ids[:64], 16)])  # warm-up: allocator, kernels
    before = peak_rss_mib()
    scorer.logprobs([(ids, response_tokens)])
    after = peak_rss_mib()
    print(json.dumps({"before_mib": before, "after_mib": after}))


def memory(context_tokens: int = 4096, response_tokens: int = 256, vocab: int = 151_936) -> None:
    mib = 4 / 2**20
    print(f"\nmemory: one {context_tokens}-token context + {response_tokens}-token response, vocabulary {vocab:,} "
          f"(random 2-layer Llama), peak RSS in a fresh subprocess; [T, V] float32 would be "
          f"{(context_tokens + response_tokens) * vocab * mib:,.0f} MiB, [response, V] {response_tokens * vocab * mib:,.0f} MiB")
    for engine in ("shared", "padded"):
        command = [sys.executable, __file__, "--memory-child", engine, str(context_tokens), str(response_tokens), str(vocab)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        peak = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {engine:>6} engine: peak RSS {peak['after_mib']:,.0f} MiB, {peak['after_mib'] - peak['before_mib']:,.0f} MiB "
              f"above the loaded model ({peak['before_mib']:,.0f} MiB)")


def report(k: int, tokens: int, sequences: list, engine: str, wall: dict[str, float], cpu: dict[str, float],
           spent: dict[str, float]) -> None:
    """Print one K's median wall and CPU seconds, ratios to the best of (b) and (c), and the scorer's profile."""
    best_c = min((name for name in wall if name.startswith("c ")), key=wall.get)
    floor = min(wall["b unbatched"], wall[best_c])
    cpu_floor = min(seconds for name, seconds in cpu.items() if not name.startswith("a "))
    default = "a scorer, shared prefixes" if engine == "shared" else "a scorer, padded batches"
    context_tokens = sum(len(ids) for ids, _ in sequences)
    padded_tokens = sum(len(sequences[g[0]][0]) * len(g) for g in buckets(sequences, int(best_c.split()[-1])))
    print(f"\nK={k}: {tokens} response tokens, {len(sequences)} contexts, {context_tokens:,} context tokens")
    for name, seconds in wall.items():
        print(f"  {name:<26} {seconds:7.2f} s  {tokens / seconds:7.0f} response tokens/s  "
              f"throughput {floor / seconds:.2f}x the best of (b), (c);  CPU {cpu[name]:7.2f} s = "
              f"{cpu_floor / cpu[name]:.2f}x")
    print(f"  the default scorer picks {default!r}: throughput {floor / wall[default]:.2f}x the best of (b), (c) "
          f"(CPU {cpu_floor / cpu[default]:.2f}x)")
    print(f"  best (c) pads {padded_tokens:,} tokens for {context_tokens:,} ({padded_tokens / context_tokens - 1:.1%} padding)")
    other = spent["total"] - spent["contexts"] - spent["logprobs"]
    print(f"  scorer profile ({spent['total']:.2f} s): contexts {spent['contexts'] / spent['total']:.0%}, "
          f"forward passes {spent['forward'] / spent['total']:.0%}, log-softmax/gather/cache bookkeeping "
          f"{(spent['logprobs'] - spent['forward']) / spent['total']:.0%}, table {other / spent['total']:.0%}; "
          f"tokens run through the model {spent['forward_tokens']:,} = {spent['forward_tokens'] / context_tokens:.2f}x "
          f"the context tokens (padding included)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--examples", type=Path, default=ROOT / "data" / "examples.jsonl")
    parser.add_argument("--n", type=int, default=8, help="use the first n examples")
    parser.add_argument("--contrasts", type=int, nargs="*", default=[0, 1, 3], help="K values (none: memory only)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--memory", action="store_true", help="also measure the 4k-context / 150k-vocab peak RSS")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        engine, *sizes = args.memory_child
        memory_child(engine, *map(int, sizes))
        return

    if args.contrasts:
        speed(args)
    if args.memory:
        memory()


def speed(args: argparse.Namespace) -> None:
    """Time (a), (b), (c) for each K of ``args.contrasts`` and print the report."""
    rows = read_examples(args.examples)[: args.n]
    model, tok = models.load(args.model)
    scorer = Scorer(model, tok, progress=False)
    padded = Scorer(model, tok, share_prefixes=False, progress=False)
    shared = Scorer(model, tok, share_prefixes=True, progress=False)
    scorer.score(rows[:4], spec=CreditSpec(n_contrast=1))  # warm-up
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, model {args.model}, first {len(rows)} examples, "
          f"median of {args.repeats} interleaved repeats", flush=True)
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())

    for k in args.contrasts:
        plan = scorer.plan(rows, spec=CreditSpec(n_contrast=k))
        sequences = [(ids, len(b.response)) for b in plan for ids in [b.student_ids, b.teacher_ids, *b.contrast_ids]]
        tokens = sum(len(b.response) for b in plan)
        groups = {rows_: buckets(sequences, rows_) for rows_ in BUCKET_ROWS}
        runs = {
            "a scorer, padded batches": lambda k=k: padded.score(rows, spec=CreditSpec(n_contrast=k)),
            "a scorer, shared prefixes": lambda k=k: shared.score(rows, spec=CreditSpec(n_contrast=k)),
            "b unbatched": lambda s=sequences: unbatched(model, s),
            **{f"c buckets of {r}": (lambda s=sequences, g=g: bucketed(model, s, g, scorer.pad_id))
               for r, g in groups.items()},
        }
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for repeat in range(args.repeats):
            shift = repeat % len(names)  # rotate the order so no run always follows the same one
            for name in names[shift:] + names[:shift]:
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[name]()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        report(k, tokens, sequences, scorer.engine(sequences), {name: statistics.median(t) for name, t in wall.items()},
               {name: statistics.median(t) for name, t in cpu.items()}, profile(scorer, rows, k))
    print(f"load average {load_before} before, {' '.join(f'{x:.1f}' for x in os.getloadavg())} after")


if __name__ == "__main__":
    main()
