"""Warm start for the shortcut testbed: a tiny Llama trained from scratch on CPU, with and without feedback.

Self-distillation needs a model that already uses feedback in context. ``build`` trains a 2-layer
Llama (word-level tokenizer, ChatML template, no download) on a mix of student examples (prompt ->
answer) and teacher examples (prompt + feedback on a simulated flawed attempt, in TRL's SDPO
reprompt format -> answer, obeying the cue the feedback holds: led by ``ok`` for the filler cue, the
cue letter at the cue position for the letter cue). It stops early so the student stays imperfect
while the teacher repairs most flagged errors; ``evaluate`` measures both. ``shortcut_model_dir``
caches the result under ``$CREDITLENS_CACHE`` (default ``~/.cache/creditlens``).

This module reads the task only through the ``ShortcutEnv`` instance it is given (it never imports
``creditlens.envs.shortcut``, not even for type hints), so the import graph has no circle;
``ShortcutEnv.default_model`` imports it when first asked, only because it is heavy (transformers).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers import models as tok_models
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from creditlens.cache import cache_dir, staged_dir
from creditlens.envs.base import Environment  # the shortcut testbed's ShortcutEnv, read by its attributes

INFO_FILE = "warmstart.json"
SPECIALS = ["<|pad|>", "<|unk|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class WarmStartConfig:
    """How the tiny model is built; every field enters the cache key."""

    hidden_size: int = 128  # model width
    layers: int = 2  # transformer blocks
    heads: int = 4  # attention heads
    steps: int = 300  # optimizer steps (the teacher converges; the student stays imperfect)
    batch_size: int = 64  # examples per step
    lr: float = 3e-3  # AdamW peak learning rate (linear warmup 5%, cosine decay)
    student_fraction: float = 0.25  # share of examples without feedback
    student_ops: float = 0.34 # share of the operations the student examples cover (the rest must be learned)
    solution_fraction: float = 0.1  # share of teacher examples that also show a correct earlier solution
    format_error_fraction: float = 0.1  # share of teacher examples whose flawed attempt broke the format
    attempt_error: float = 0.5  # chance that each letter of a simulated flawed attempt is wrong
    cue: float = 0.5  # chance that a teacher example's feedback holds a cue
    letter_cue_fraction: float = 0.5  # share of those cues that are the (harmful) letter cue, not the filler cue
    eval_problems: int = 256  # held-out problems used to measure student and teacher
    seed: int = 0


def build_tokenizer(env: Environment) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``env.vocabulary()`` with a ChatML chat template (eos ``<|im_end|>``)."""
    vocab = {word: i for i, word in enumerate(SPECIALS + env.vocabulary())}
    backend = Tokenizer(tok_models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _response(answer: list[str], filler: bool = False) -> str:
    return ("ok " if filler else "") + "answer : " + " ".join(answer) + " ."


def teaching_envs(env: Environment, config: WarmStartConfig) -> dict[str, Environment]:
    """The task of ``env`` once per cue kind (``filler``, ``letter``), with the warm start's cue rate."""
    return {kind: type(env)(**env.task_config(), cue=config.cue, cue_kind=kind) for kind in ("filler", "letter")}


def _flawed_attempt(env: Environment, answer: list[str], rng: random.Random, config: WarmStartConfig) -> str:
    if rng.random() < config.format_error_fraction:
        return " ".join(rng.choice(env.letters) for _ in range(rng.randint(1, env.length + 2)))
    wrong = [i for i in range(env.length) if rng.random() < config.attempt_error] or [rng.randrange(env.length)]
    letters = [rng.choice([c for c in env.letters if c != a]) if i in wrong else a for i, a in enumerate(answer)]
    return _response(letters, False)


def training_example(
    envs: dict[str, Environment], config: WarmStartConfig, rng: random.Random
) -> tuple[list[dict], str]:
    """One ``(chat messages, target response)`` pair from ``envs = teaching_envs(...)``: a student example
    (on the first ``student_ops`` share of the operations only) or a teacher example (any operation; its
    feedback holds the filler or the letter cue with rates ``config.cue`` and ``config.letter_cue_fraction``,
    and the target obeys it)."""
    env = envs["letter" if rng.random() < config.letter_cue_fraction else "filler"]
    student = rng.random() < config.student_fraction
    ops = env.ops[: max(1, round(config.student_ops * len(env.ops)))] if student else env.ops
    problem = env.make_problem(rng.choice(ops), [rng.choice(env.letters) for _ in range(env.length)])
    answer = problem.reference["answer"]
    if student:
        return problem.prompt, _response(answer, False)
    attempt = _flawed_attempt(env, answer, rng, config)
    feedback = env.verify(problem, attempt).feedback
    solution = _response(answer, False) if rng.random() < config.solution_fraction else ""
    target = _response(env.follow_cue(answer, feedback), env.cue_feedback in feedback and env.cue_kind == "filler")
    return env.teacher_prompt(problem, feedback, solution), target


def _encode(tokenizer: PreTrainedTokenizerFast, messages: list[dict], target: str) -> tuple[list[int], int]:
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + target_ids, len(prompt_ids)


def _batch(tokenizer, examples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    encoded = [_encode(tokenizer, m, t) for m, t in examples]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        attention[row, : len(ids)] = 1
    return input_ids, attention, labels


def new_model(tokenizer: PreTrainedTokenizerFast, config: WarmStartConfig) -> LlamaForCausalLM:
    """A freshly initialised Llama sized by ``config``."""
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=4 * config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(model_config)


def train(env: Environment, config: WarmStartConfig) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Train the tiny model from scratch on one CPU thread (a 2-layer model gains nothing from more, and
    loses much on a shared machine); deterministic given ``config.seed`` (on one machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(env, config)
    finally:
        torch.set_num_threads(threads)


def _train(env: Environment, config: WarmStartConfig) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    tokenizer = build_tokenizer(env)
    model = new_model(tokenizer, config)
    envs = teaching_envs(env, config)
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / config.steps)).item()),
    )
    model.train()
    for _ in tqdm(range(config.steps), desc="warm start: training", unit="step", mininterval=2.0):
        input_ids, attention, labels = _batch(
            tokenizer, [training_example(envs, config, rng) for _ in range(config.batch_size)]
        )
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return model, tokenizer


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[dict]], sample: bool = False, max_new_tokens: int = 16) -> list[str]:
    """Responses to chat ``prompts`` (greedy, or sampled at temperature 1), special tokens removed."""
    if not prompts:
        return []
    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=1.0 if sample else None,
        top_k=0 if sample else None,
        top_p=1.0 if sample else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def _follows_cue(env: Environment, response: str, wanted: list[str]) -> bool:
    """Filler cue: the response starts with the filler; letter cue: the cue position holds the cue letter."""
    if env.cue_kind == "filler":
        return response.split()[:1] == [env.filler]
    letters = env.parse(response)
    return letters is not None and letters[env.cue_position] == wanted[env.cue_position]


def evaluate(model, tokenizer, env: Environment, n: int = 256, seed: int = 0) -> dict[str, float]:
    """Student vs teacher on ``n`` held-out problems, greedy decoding.

    ``student_pass``/``student_reward``: the prompt alone. The teacher sees the verifier's feedback on
    the student's attempt (with ``env.cue``) and answers again; a passed attempt is kept as is (SDPO
    never reprompts it), so ``teacher_pass`` is the pass rate after one round of feedback and
    ``repair_rate`` the share of failed attempts the teacher fixes; ``cue_followed`` the share of cued
    feedback the teacher obeys (``env.cue_kind`` decides which cue).
    """
    problems = env.problems("eval", n=n, seed=seed)
    first = generate(model, tokenizer, [p.prompt for p in problems])
    outcomes = [env.verify(p, r) for p, r in zip(problems, first, strict=True)]
    failed = [i for i, o in enumerate(outcomes) if not o.passed]
    second = generate(model, tokenizer, [env.teacher_prompt(problems[i], outcomes[i].feedback) for i in failed])
    teacher = list(outcomes)
    for i, response in zip(failed, second, strict=True):
        teacher[i] = env.verify(problems[i], response)
    cued = [i for i in failed if env.cue_feedback in outcomes[i].feedback]
    second_by_index = dict(zip(failed, second, strict=True))
    wanted = {i: env.follow_cue(problems[i].reference["answer"], outcomes[i].feedback) for i in cued}
    return {
        "student_pass": sum(o.passed for o in outcomes) / n,
        "student_reward": sum(o.reward for o in outcomes) / n,
        "teacher_pass": sum(o.passed for o in teacher) / n,
        "teacher_reward": sum(o.reward for o in teacher) / n,
        "repair_rate": sum(teacher[i].passed for i in failed) / max(1, len(failed)),
        "cue_followed": sum(_follows_cue(env, second_by_index[i], wanted[i]) for i in cued) / max(1, len(cued)),
        "n_problems": n,
    }


def _key(env: Environment, config: WarmStartConfig) -> str:
    blob = json.dumps({"task": env.task_config(), "config": asdict(config), "version": 2}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build(env: Environment, config: WarmStartConfig, out_dir: str | os.PathLike) -> dict:
    """Train, evaluate and save model + tokenizer + ``warmstart.json`` to ``out_dir`` atomically."""
    with staged_dir(Path(out_dir), INFO_FILE) as staging:
        model, tokenizer = train(env, config)
        scores = {
            kind: evaluate(model, tokenizer, task, n=config.eval_problems)
            for kind, task in teaching_envs(env, config).items()
        }
        model.save_pretrained(staging)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(staging)
        info = {"task": env.task_config(), "config": asdict(config), "scores": scores}
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def shortcut_model_dir(
    env: Environment, config: WarmStartConfig | None = None, root: str | os.PathLike | None = None
) -> Path:
    """Directory of the warm-started model for ``env``'s task; trains it (2-4 min on CPU) when missing.

    Loads with ``AutoModelForCausalLM.from_pretrained(dir)`` and ``AutoTokenizer.from_pretrained(dir)``.
    """
    config = config or WarmStartConfig()
    target = Path(root or cache_dir()) / f"shortcut-{_key(env, config)}"
    if not (target / INFO_FILE).is_file():
        print(f"creditlens: training the shortcut warm start into {target}", file=sys.stderr)
        build(env, config, target)
    return target


def load_info(model_dir: str | os.PathLike) -> dict:
    """The ``warmstart.json`` (task, config, measured scores) of a built model directory."""
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a shortcut warm-start directory (no {INFO_FILE})")
    return json.loads(path.read_text())
