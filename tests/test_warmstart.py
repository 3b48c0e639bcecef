"""The warm start: a small build from scratch whose teacher (with feedback) beats its student (without)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creditlens import warmstart
from creditlens.envs.shortcut import ShortcutEnv

ENV = dict(n_letters=6, length=3, n_ops=3)
FAST = warmstart.WarmStartConfig(hidden_size=128, steps=150, batch_size=32, eval_problems=64)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return warmstart.shortcut_model_dir(ShortcutEnv(**ENV), FAST, root=root), root


@torch.no_grad()
def _greedy(model, tokenizer, messages, max_new_tokens=10):
    """Plain argmax decoding with full forward passes (independent of generate())."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new = []
    for _ in range(max_new_tokens):
        token = int(model(input_ids=ids).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.slow
def test_teacher_with_feedback_beats_student(built):
    model_dir, _ = built
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    env = ShortcutEnv(**ENV, cue=0.5)
    problems = env.problems("eval", n=48, seed=7)
    student = teacher = 0
    for problem in problems:
        first = env.verify(problem, _greedy(model, tokenizer, problem.prompt))
        if first.passed:
            student += 1
            teacher += 1
            continue
        second = env.verify(problem, _greedy(model, tokenizer, env.teacher_prompt(problem, first.feedback)))
        teacher += second.passed
    assert student / len(problems) < 0.8, "the student should stay imperfect (room to learn)"
    assert teacher / len(problems) >= student / len(problems) + 0.15
    scores = warmstart.load_info(model_dir)["scores"]
    for kind in ("filler", "letter"):
        assert scores[kind]["teacher_pass"] >= scores[kind]["student_pass"] + 0.15
    assert scores["filler"]["repair_rate"] >= 0.3
    # the teacher obeys the harmful letter cue, so it repairs fewer attempts than with the harmless filler cue
    assert scores["letter"]["teacher_pass"] < scores["filler"]["teacher_pass"]
    assert scores["letter"]["cue_followed"] >= 0.8


def test_build_is_cached_and_loads_like_any_hf_model(built):
    model_dir, root = built
    info = json.loads((model_dir / warmstart.INFO_FILE).read_text())
    assert info["task"] == ShortcutEnv(**ENV).task_config() and info["config"]["steps"] == FAST.steps
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert warmstart.shortcut_model_dir(ShortcutEnv(**ENV, cue=1.0), FAST, root=root) == model_dir  # cue-independent
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no staging folder left behind"
    other = warmstart.WarmStartConfig(hidden_size=128, steps=151, batch_size=32)
    assert warmstart._key(ShortcutEnv(**ENV), other) not in model_dir.name
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    response = "ok answer : a b c ."
    assert tokenizer.decode(tokenizer(response, add_special_tokens=False)["input_ids"]) == response


def test_training_examples_follow_the_cue_and_the_hints():
    env = ShortcutEnv(**ENV)
    envs = warmstart.teaching_envs(env, FAST)
    rng = random.Random(0)
    kinds = {"filler": 0, "letter": 0}
    for _ in range(300):
        messages, target = warmstart.training_example(envs, FAST, rng)
        text = messages[-1]["content"]
        op, *letters = text.split("\n")[0].removeprefix("apply ").replace(" to", "").split()
        written = target.split()[-env.length - 1 : -1]
        answer = env.answer(op, letters)
        letter_cue = "note : position 1 should be a ." in text
        kinds["letter"] += letter_cue
        kinds["filler"] += "note : start with ok ." in text
        assert written == (["a"] + answer[1:] if letter_cue else answer)  # the letter cue overrides position 1
        assert target.startswith("ok ") == ("note : start with ok" in text)
        if "feedback" not in text:
            assert op in env.ops[: round(FAST.student_ops * env.n_ops)]  # student examples: seen ops only
    assert kinds["letter"] > 20 and kinds["filler"] > 20  # both cues appear (rates FAST.cue, letter_cue_fraction)


def test_warmstart_does_not_import_the_environment_module():
    """No import circle: the env asks the warm start for its model, the warm start never imports the env."""
    import subprocess
    import sys

    code = "import sys, creditlens.warmstart; print('creditlens.envs.shortcut' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
