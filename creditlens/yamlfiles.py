"""YAML config files and ``--set KEY=VALUE`` values, read with one-line errors (:class:`ConfigError`).

The one YAML reader of creditlens: the training config and the headroom config go through it, so a
missing file, a directory, text that is not UTF-8, a syntax error (with its line) or nesting too deep
for the parser is refused the same way everywhere, naming the option and the file. So are a file over
``MAX_BYTES``, a document whose aliases expand to more than ``MAX_VALUES`` values (an "alias bomb" is
refused while it is read, in milliseconds) and a key written twice in one mapping (naming both lines).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from creditlens.errors import ConfigError

MAX_BYTES = 1 << 20  # a config file is a few kB; a megabyte is already absurd
MAX_VALUES = 100_000  # scalars, lists and mappings of the document with every alias expanded


class _Refused(yaml.YAMLError):
    """A document the loader will not build: ``problem`` at 0-based ``line``."""

    def __init__(self, problem: str, line: int):
        super().__init__(problem)
        self.problem, self.line = problem, line


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts values with aliases expanded and refuses duplicate keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        if alias:
            size = self._sizes.get(id(node), 1)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes.get(id(item), 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        if size > MAX_VALUES:
            raise _Refused(f"aliases expand it to more than {MAX_VALUES:,} values (an alias bomb?); "
                           "write the values out or use fewer aliases", mark.line)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line
                if key in seen:
                    raise _Refused(f"key {key!r} appears twice in one mapping (first at line {seen[key] + 1}); "
                                   "keep one", line)
                seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | os.PathLike, option: str = "--config") -> Any:
    """The YAML document in ``path`` (an empty file reads as ``{}``)."""
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise ConfigError(f"{option} {path}: {what}; give a YAML config file (see configs/)")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{option} {path}: {size:,} bytes, more than a config may hold ({MAX_BYTES:,}); "
                          "give a YAML config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError(f"{option} {path}: line {line} is not UTF-8 text (byte {error.object[error.start]:#04x}); "
                          "save the file as UTF-8") from None
    return parse_yaml(text, f"{option} {path}") or {}


def parse_yaml(text: str, where: str) -> Any:
    """The YAML value ``text`` (a whole file, or the VALUE of ``--set KEY=VALUE``); errors name ``where``."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _Refused as error:
        raise ConfigError(f"{where}: line {error.line + 1}: {error.problem}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}:{line} not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()
