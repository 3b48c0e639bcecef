"""Model loading: the tiny test model, the embedded SmolLM2 cache and its error paths."""

from __future__ import annotations

import sys

import pytest
import torch

from creditlens import cache, models
from creditlens.errors import DownloadError, ModelError


def test_tiny_is_deterministic_and_has_a_real_tokenizer():
    model, tok = models.load("tiny")
    other, _ = models.load("tiny")
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    text = "déf add(a, b):\n    return a + b  # ∑ 😀"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # BPE merges exist
    assert len(tok) == model.config.vocab_size
    assert tok.chat_template and tok.pad_token_id is not None and tok.eos_token == "<|im_end|>"
    assert not model.training


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="missing-model'?: no such directory"):
        models.load(str(tmp_path / "missing-model"))
    with pytest.raises(ModelError, match="never downloads"):
        models.load("no-such-org/no-such-model")


def test_pip_failure_explains_the_manual_route_and_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(models.GGUF_ENV, raising=False)

    no_network = [sys.executable, "-c", "import sys; sys.exit('ERROR: No matching distribution found')"]
    monkeypatch.setattr(cache, "PIP", no_network)
    with pytest.raises(DownloadError, match="No matching distribution found") as error:
        models.load(models.DEFAULT_MODEL)
    assert models.GGUF_ENV in str(error.value)
    assert list(tmp_path.iterdir()) == []  # the failed conversion left nothing behind
    monkeypatch.setenv(models.GGUF_ENV, str(tmp_path / "nowhere.gguf"))
    with pytest.raises(ModelError, match=models.GGUF_ENV):
        models.load(models.DEFAULT_MODEL)
    (tmp_path / "download.whl").write_bytes(b"<html>proxy error</html>")
    monkeypatch.setenv(models.GGUF_ENV, str(tmp_path / "download.whl"))
    with pytest.raises(ModelError, match=r"download.whl: neither a wheel \(zip\) nor a .gguf file"):
        models.load(models.DEFAULT_MODEL)
    assert [p.name for p in tmp_path.iterdir()] == ["download.whl"]


def test_embedded_model_generates_sensible_text():
    target = models.cache_dir() / "smollm2-135m-instruct" / "config.json"
    if not target.is_file():
        pytest.skip(f"embedded model not converted yet ({target} missing; `creditlens demo` builds it)")
    model, tok = models.load(models.DEFAULT_MODEL)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tok(ids, add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])


def test_staged_dir_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "built"
    with pytest.raises(OSError, match="build failed"), cache.staged_dir(target, "done.txt") as staging:
        (staging / "half.txt").write_text("x")
        raise OSError("build failed")
    assert list(tmp_path.iterdir()) == []
    with cache.staged_dir(target, "done.txt") as staging:
        (staging / "done.txt").write_text("ok")
    assert (target / "done.txt").read_text() == "ok"
    assert list(tmp_path.iterdir()) == [target]
    with cache.staged_dir(target, "done.txt") as staging:  # another process won the race: its copy stays
        (staging / "done.txt").write_text("late")
    assert (target / "done.txt").read_text() == "ok" and list(tmp_path.iterdir()) == [target]
