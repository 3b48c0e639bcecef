"""Self-teaching headroom: does the feedback-conditioned model (the SD teacher) beat the student?

For N problems of an environment the student samples ``num_generations`` attempts each; every attempt is
verified. The first ``max_teacher_asks`` failed attempts of each problem are then answered again by the
same model re-prompted SDPO-style (``trl.experimental.sdpo``'s reprompt, solution and feedback templates):

- **feedback**: the prompt, then the verifier's feedback on that failed attempt;
- **sibling**: the same with a successful attempt of the same problem ("Correct solution:") placed
  before the feedback, as SDPO's teacher sees it (only where the problem has a success).

A teacher pass rate is compared with the student's *matched* pass rate: for each failed attempt, the
pass rate of the student's other attempts at the same problem (leave-one-out), so both rates are about
the same problems. ``headroom = teacher pass rate - matched student pass rate``.

The re-answered failed attempts are also scored token by token (:class:`creditlens.scoring.Scorer`, the SD teacher's
context with the sibling when there is one, K contrast prompts of other problems): mean ``sd_reward``,
``specific``, ``shortcut`` and the generic share (:func:`creditlens.stats.generic_share`, the input-generic
part of the positive SD credit, docs/CREDIT-MATH.md section 9).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from creditlens import stats
from creditlens.contexts import ContextConfig, Templates, teacher_prompt
from creditlens.credit import DEFAULT_SPEC, CreditSpec
from creditlens.envs.base import Environment, Problem
from creditlens.errors import ConfigError, InputError, ModelError
from creditlens.renamed import refuse_renamed
from creditlens.scoring import Scorer, ScorerConfig
from creditlens.yamlfiles import read_yaml

TEMPLATE_KEYS = ("reprompt_template", "solution_template", "feedback_template")


@dataclass
class HeadroomConfig:
    """Sampling and scoring settings; the sampling fields carry the same names as a training config's."""

    num_generations: int = 4  # student attempts per problem
    max_completion_length: int = 256  # most new tokens per attempt (student and teacher)
    temperature: float = 1.0  # sampling temperature (student and teacher)
    top_p: float = 1.0  # nucleus sampling
    top_k: int = 0  # top-k sampling (0: off, TRL's default)
    seed: int = 0  # seed of the problem order and of sampling
    split: str = "train"  # problems from this split of the environment
    env_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the environment
    problems_per_batch: int = 4  # problems sampled together in one generate call (speed only)
    max_teacher_asks: int = 2  # failed attempts per problem answered again by the teacher (the first ones)
    n_contrast: int = DEFAULT_SPEC.n_contrast  # K contrast prompts per scored attempt (0: no decomposition)
    pool: str = DEFAULT_SPEC.pool  # contrast pooling (CreditSpec's fields, defaults and checks)
    lam: float = DEFAULT_SPEC.lam  # CREDIT lambda of the logged credit_reward column
    batch_size: int = 8  # sequences per scoring forward pass
    templates: dict[str, str] = field(default_factory=dict)  # SDPOConfig's *_template keys set: they shape the teacher

    @property
    def spec(self) -> CreditSpec:
        """The CREDIT settings of the logged token table (K contrasts, lam, pool; the default form)."""
        return CreditSpec(lam=self.lam, pool=self.pool, n_contrast=self.n_contrast)

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        if self.num_generations < 1:
            raise ConfigError(f"num_generations: must be >= 1, got {self.num_generations}")
        if self.max_completion_length < 1:
            raise ConfigError(f"max_completion_length: must be >= 1, got {self.max_completion_length}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.problems_per_batch < 1:
            raise ConfigError(f"problems_per_batch: must be >= 1, got {self.problems_per_batch}")
        if self.max_teacher_asks < 1:
            raise ConfigError(f"max_teacher_asks: must be >= 1, got {self.max_teacher_asks}")
        _ = self.spec  # CreditSpec checks lam, pool and n_contrast
        if not isinstance(self.templates, dict) or set(self.templates) - set(TEMPLATE_KEYS):
            raise ConfigError(f"templates: must be a mapping with keys among {TEMPLATE_KEYS}")
        Templates.of(self.templates)  # each *_template given must be a string


def load_headroom_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> HeadroomConfig:
    """Read the :class:`HeadroomConfig` fields of a YAML file (a training config works: its ``*_template`` keys
    shape the teacher, its other keys are ignored); any other key is an error naming the key and the file."""
    from creditlens.training.config import declared

    values: dict[str, Any] = {}
    if path is not None:
        values = read_yaml(path)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields")
    values = {**values, **(overrides or {})}
    own = {f.name for f in dataclasses.fields(HeadroomConfig)} - {"templates"}
    unknown = sorted(set(values) - own - set(declared()))
    if unknown:
        refuse_renamed(unknown[0], str(path or "overrides"))
        raise ConfigError(f"{path or 'overrides'}: unknown key {unknown[0]!r}; headroom reads {sorted(own)}")
    templates = {k: values[k] for k in TEMPLATE_KEYS if k in values}
    config = HeadroomConfig(**{k: v for k, v in values.items() if k in own}, templates=templates)
    config.check()
    return config


def reprompt(problem: Problem, feedback: str, solution: str | None = None,
             templates: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The teacher's chat messages: ``problem.prompt`` rewritten by :func:`creditlens.contexts.teacher_prompt`,
    the trainer's builder, with TRL SDPO's templates (``Templates.of(templates)``: a training config's)."""
    templates = Templates.of(templates or {})
    return teacher_prompt(problem.prompt, templates.solution_text(solution), templates.feedback_text(feedback),
                          templates)


def check_model(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Raise :class:`ModelError` when the model cannot be prompted as a chat model (no chat template)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"model {name!r}: its tokenizer has no chat template, so it cannot answer the environment's "
                         "chat prompts; use an instruction-tuned model (e.g. smollm2-135m-instruct)")


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict[str, str]]],
    config: HeadroomConfig,
    num_return_sequences: int = 1,
) -> list[list[int]]:
    """Sample completions of chat ``prompts``: ``len(prompts) * num_return_sequences`` lists of token ids
    (prompt-major), each ending at its first end-of-sequence token (kept) or at ``max_completion_length``."""
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    output = model.generate(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        do_sample=True,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_new_tokens=config.max_completion_length,
        num_return_sequences=num_return_sequences,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    completions = output[:, batch["input_ids"].shape[1]:].tolist()
    out = []
    for ids in completions:
        end = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)
        out.append(ids[:end])
    return out


def _attempt_rows(env: Environment, problems: list[Problem], model: PreTrainedModel,
                  tokenizer: PreTrainedTokenizerBase, config: HeadroomConfig, progress: bool) -> list[dict]:
    """Student attempts and the teacher's re-answers, one dict per student attempt.

    ``problems_per_batch`` problems share each ``generate`` call (one for the students, one for the teachers).
    """
    rows: list[dict] = []
    bar = tqdm(total=len(problems), desc=f"headroom {env.name}", unit="problem", disable=not progress)
    for start in range(0, len(problems), config.problems_per_batch):
        chunk = problems[start:start + config.problems_per_batch]
        torch.manual_seed(config.seed * 1_000_003 + start)
        g = config.num_generations
        student = generate(model, tokenizer, [p.prompt for p in chunk], config, g)
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in student]
        outcomes = [env.verify(chunk[j // g], text) for j, text in enumerate(texts)]
        asks: list[tuple[str, int, list[dict[str, str]]]] = []  # (kind, attempt index j, teacher prompt)
        siblings: dict[int, str | None] = {}
        for p_index, problem in enumerate(chunk):
            own = range(p_index * g, (p_index + 1) * g)
            siblings[p_index] = next((texts[j] for j in own if outcomes[j].passed), None)
            failed = [j for j in own if not outcomes[j].passed][: config.max_teacher_asks]
            asks += [("feedback", j, reprompt(problem, outcomes[j].feedback, templates=config.templates)) for j in failed]
            if siblings[p_index] is not None:
                asks += [("sibling", j, reprompt(problem, outcomes[j].feedback, siblings[p_index], config.templates))
                         for j in failed]
        answers = generate(model, tokenizer, [a[2] for a in asks], config) if asks else []
        teacher = {(kind, j): tokenizer.decode(ids, skip_special_tokens=True)
                   for (kind, j, _), ids in zip(asks, answers, strict=True)}
        verdict = {(kind, j): env.verify(chunk[j // g], text).passed for (kind, j), text in teacher.items()}
        for j, (ids, text, outcome) in enumerate(zip(student, texts, outcomes, strict=True)):
            others = [outcomes[k].passed for k in range(j - j % g, j - j % g + g) if k != j]
            rows.append({
                "problem_id": chunk[j // g].id, "attempt": j % g, "response": text, "response_ids": ids,
                "passed": outcome.passed, "reward": outcome.reward, "feedback": outcome.feedback,
                "student_loo_pass": sum(others) / len(others) if others else float("nan"),
                "solution": siblings[j // g] if not outcome.passed else None,
                "teacher_feedback_response": teacher.get(("feedback", j)),
                "teacher_feedback_passed": verdict.get(("feedback", j)),
                "teacher_sibling_response": teacher.get(("sibling", j)),
                "teacher_sibling_passed": verdict.get(("sibling", j)),
            })
        bar.update(len(chunk))
    bar.close()
    return rows


def _rate(values: pd.Series) -> tuple[float, int]:
    values = values.dropna().astype(float)
    return (float(values.mean()) if len(values) else float("nan")), int(len(values))


def _ci95(p: float, n: int) -> tuple[float, float]:
    """The 95% Wilson interval ``(low, high)`` of a pass rate ``p`` over ``n`` trials (inside [0, 1], not
    empty at 0/n or n/n; NaN for n = 0)."""
    return stats.wilson_interval(round(p * n), n) if n else (float("nan"), float("nan"))


def summarize(attempts: pd.DataFrame, tokens: pd.DataFrame | None) -> dict[str, Any]:
    """The headroom numbers of an attempts frame (one row per student attempt) and its token table."""
    out: dict[str, Any] = {"n_problems": int(attempts["problem_id"].nunique()), "n_attempts": len(attempts)}
    out["student_pass_rate"], _ = _rate(attempts["passed"])
    out["student_pass_at_k"] = float(attempts.groupby("problem_id")["passed"].any().mean())
    out["student_ci95_low"], out["student_ci95_high"] = _ci95(out["student_pass_rate"], len(attempts))
    failed = attempts[~attempts["passed"].astype(bool)]
    out["n_failed"] = len(failed)
    for kind in ("feedback", "sibling"):
        asked = failed[failed[f"teacher_{kind}_passed"].notna()]
        rate, n = _rate(asked[f"teacher_{kind}_passed"])
        matched, _ = _rate(asked["student_loo_pass"])
        out[f"n_{kind}"] = n
        out[f"teacher_{kind}_pass_rate"] = rate
        out[f"teacher_{kind}_ci95_low"], out[f"teacher_{kind}_ci95_high"] = _ci95(rate, n)
        out[f"student_matched_{kind}"] = matched
        out[f"headroom_{kind}"] = rate - matched if n else float("nan")
    if tokens is not None and len(tokens) and "shortcut" in tokens:
        counted = tokens[tokens["mask"].astype(bool)]
        out["n_tokens"] = len(counted)
        out["generic_share"] = stats.generic_share(tokens) if stats.has_axis(tokens, "input") else float("nan")
        for column in ("sd_reward", "specific", "shortcut"):
            out[f"mean_{column}"] = float(counted[column].mean())
    return out


def token_table(attempts: pd.DataFrame, problems: list[Problem], model: PreTrainedModel,
                tokenizer: PreTrainedTokenizerBase, config: HeadroomConfig, progress: bool) -> pd.DataFrame | None:
    """Per-token SD decomposition (:mod:`creditlens.schema` table) of the failed attempts the teacher
    re-answered, or None when there is nothing to contrast (no contrast asked, or fewer than
    ``n_contrast + 1`` problems with such attempts)."""
    by_id = {p.id: p for p in problems}
    failed = attempts[~attempts["passed"].astype(bool) & attempts["teacher_feedback_response"].notna()]
    if config.n_contrast < 1 or failed["problem_id"].nunique() < config.n_contrast + 1:
        return None
    examples = [
        {"prompt": by_id[row.problem_id].prompt, "feedback": row.feedback, "response": list(row.response_ids),
         "prompt_id": row.problem_id, "example_id": f"{row.problem_id}#{row.attempt}", "solution": row.solution}
        for row in failed.itertuples()
    ]
    scorer = Scorer(model, tokenizer, ScorerConfig(batch_size=config.batch_size, progress=progress,
                                                   context=ContextConfig(templates=Templates.of(config.templates))))
    return scorer.score(examples, config.spec, seed=config.seed)


def headroom(
    env: Environment,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n: int,
    config: HeadroomConfig | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame | None]:
    """Measure the self-teaching headroom of ``model`` on ``n`` problems of ``env``.

    Returns ``(summary, attempts, tokens)``: the numbers (:func:`summarize`), one row per student attempt
    (``n * num_generations`` rows) and the per-token table of the failed attempts (None without contrasts).
    """
    config = config or HeadroomConfig()
    config.check()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"n: must be an integer >= 1, got {n!r}")
    check_model(tokenizer, getattr(model.config, "_name_or_path", "") or type(model).__name__)
    problems = env.problems(config.split, n=n, seed=config.seed)
    attempts = pd.DataFrame(_attempt_rows(env, problems, model, tokenizer, config, progress))
    tokens = token_table(attempts, problems, model, tokenizer, config, progress)
    summary = {"env": env.name, **summarize(attempts, tokens), "config": dataclasses.asdict(config)}
    return summary, attempts, tokens


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of one summary."""
    def pct(key: str) -> str:
        value = summary.get(key, float("nan"))
        return "n/a" if value != value else f"{100 * value:.1f}%"

    def ci(prefix: str) -> str:
        return f"[{pct(f'{prefix}_ci95_low')}, {pct(f'{prefix}_ci95_high')}]"

    lines = [
        f"env {summary['env']}: {summary['n_problems']} problems x {summary['config']['num_generations']} attempts",
        f"  student pass rate              {pct('student_pass_rate'):>8}  {ci('student')}  "
        f"(pass@{summary['config']['num_generations']} {pct('student_pass_at_k')})",
        f"  failed attempts                {summary['n_failed']:>8}",
    ]
    for kind, label in (("feedback", "teacher + feedback"), ("sibling", "teacher + sibling + feedback")):
        lines.append(
            f"  {label:<30} {pct(f'teacher_{kind}_pass_rate'):>8}  {ci(f'teacher_{kind}')}  "
            f"on {summary[f'n_{kind}']} failed attempts; matched student {pct(f'student_matched_{kind}')}, "
            f"headroom {pct(f'headroom_{kind}')}"
        )
    if "generic_share" in summary:
        lines.append(
            f"  SD credit of failed attempts: generic share {summary['generic_share']:.3f}, mean sd_reward "
            f"{summary['mean_sd_reward']:+.3f} = specific {summary['mean_specific']:+.3f} + shortcut "
            f"{summary['mean_shortcut']:+.3f} nats/token over {summary['n_tokens']} tokens"
        )
    return "\n".join(lines)


def write(out: str | Path, summary: dict[str, Any], attempts: pd.DataFrame, tokens: pd.DataFrame | None) -> Path:
    """Write ``headroom.json``, ``attempts.jsonl`` and (when scored) ``tokens.parquet`` into ``out``."""
    from creditlens import runs, schema

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_text(out / "headroom.json", json.dumps(runs.jsonable(summary), indent=1) + "\n")  # NaN: null
    attempts.drop(columns=["response_ids"]).to_json(out / "attempts.jsonl", orient="records", lines=True)
    if tokens is not None:
        schema.write_token_table(tokens, out / "tokens.parquet")
    return out / "headroom.json"
