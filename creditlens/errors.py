"""The errors creditlens raises for bad input: one base class, one subclass per kind of input.

Every class is a ``ValueError``, so ``except ValueError`` keeps working. Each message is one line that
names the file, field or line at fault and what would fix it; ``creditlens.cli.main`` prints it as
``creditlens CMD: error: MESSAGE`` and exits 2.
"""

from __future__ import annotations


class CreditlensError(ValueError):
    """Base class: bad input to creditlens (a file, a path, an option or an argument)."""


class ConfigError(CreditlensError):
    """A config file, a ``--set`` override or a config field that cannot be used."""


class InputError(CreditlensError):
    """An input file (examples, JSONL), an output path (``--out``) or a command-line option that cannot be used."""


class RunError(CreditlensError):
    """A run directory that cannot be read or written; the message names the path."""


class SchemaError(CreditlensError):
    """A per-token table that breaks the schema; the message names the source and the column."""


class ModelError(CreditlensError):
    """A model name, path, device or dtype that cannot be loaded; nothing is ever fetched from a hub."""


class SandboxError(CreditlensError):
    """A bad argument to the sandbox, or a requested isolation mode that is unavailable."""


class DownloadError(CreditlensError, RuntimeError):
    """pip could not fetch a wheel (still a ``RuntimeError``, as before); the message holds pip's last line."""
