"""Subcommands of the ``creditlens`` CLI, one module each (listed in ``creditlens/cli.py``).

Each module defines ``register(subparsers)``, which adds its options, and ``run(args)``, which does the
work; heavy libraries (torch, transformers, pandas) are imported inside ``run`` so ``--help`` is fast, and
only after every argument and input file that can be checked without them has been (tests/test_cli_early.py
runs each refusal with torch made unimportable). The argument types below turn a bad value into argparse's
one-line ``creditlens CMD: error: argument --X: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (counts: ``--n``, ``--jobs``, ``--batch-size``)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (seeds, ``--contrast``, ``--gap-samples``)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def unit_float(text: str) -> float:
    """A number in [0, 1] (``--lam``)."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


def port_number(text: str) -> int:
    """A TCP port in 0..65535 (0: pick a free one)."""
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port in 0..65535 (0 picks a free one), got {value}")
    return value


def device_name(text: str) -> str:
    """A torch device name, checked without importing torch: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether the
    device exists here is checked when the model loads)."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"device {text!r}: not a device name; use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return text


def existing_file(text: str) -> Path:
    """A path to an existing file or pipe (examples, configs), not a directory."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: a directory, not a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def check_model(name: str | None) -> None:
    """Refuse a ``--model`` that is not found locally before torch is imported or a model is loaded; the
    embedded model and ``tiny`` (built on first use) and None (the environment's model) pass."""
    from creditlens import models

    if name is not None and name not in (models.DEFAULT_MODEL, models.TINY_MODEL):
        models.resolve(name)
