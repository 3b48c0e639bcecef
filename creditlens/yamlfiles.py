"""YAML config files and ``--set KEY=VALUE`` values, read with one-line errors (:class:`ConfigError`).

The one YAML reader of creditlens: the training config and the headroom config go through it, so a
missing file, a directory, text that is not UTF-8, a syntax error (with its line) or nesting too deep
for the parser is refused the same way everywhere, naming the option and the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from creditlens.errors import ConfigError


def read_yaml(path: str | os.PathLike, option: str = "--config") -> Any:
    """The YAML document in ``path`` (an empty file reads as ``{}``)."""
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise ConfigError(f"{option} {path}: {what}; give a YAML config file (see configs/)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError(f"{option} {path}: line {line} is not UTF-8 text (byte {error.object[error.start]:#04x}); "
                          "save the file as UTF-8") from None
    return parse_yaml(text, f"{option} {path}") or {}


def parse_yaml(text: str, where: str) -> Any:
    """The YAML value ``text`` (a whole file, or the VALUE of ``--set KEY=VALUE``); errors name ``where``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}:{line} not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply to read") from None
