"""Environments by name: ``get("code")``, ``names()``. Each module is imported only when asked for."""

from __future__ import annotations

import importlib
import inspect

from creditlens.envs.base import Environment
from creditlens.errors import InputError

REGISTRY = {
    "code": ("creditlens.envs.code", "CodeEnv", "HumanEval, 164 problems, run in the sandbox"),
    "tools": ("creditlens.envs.tools", "ToolsEnv", "BFCL v4 simple_python, 400 function calls"),
    "science": ("creditlens.envs.science", "ScienceEnv", "generated chemistry and physics with units"),
    "shortcut": ("creditlens.envs.shortcut", "ShortcutEnv", "synthetic testbed with token-level labels"),
}


def names() -> list[str]:
    """The registered environment names."""
    return list(REGISTRY)


def describe(name: str) -> str:
    """One line about environment ``name``."""
    return REGISTRY[_check(name)][2]


def get(name: str, **kwargs) -> Environment:
    """A new environment ``name`` built with ``kwargs`` (its dataclass fields / constructor keywords)."""
    module_name, class_name, _ = REGISTRY[_check(name)]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise InputError(f"environment {name!r} is registered but {module_name} is not available yet "
                         f"(it should define {class_name})") from None
    env_class = getattr(module, class_name)
    try:
        inspect.signature(env_class).bind(**kwargs)
    except TypeError as error:
        accepted = ", ".join(inspect.signature(env_class).parameters) or "none"
        raise InputError(f"environment {name!r}: {error} (its arguments: {accepted})") from None
    return env_class(**kwargs)


def _check(name: str) -> str:
    if name not in REGISTRY:
        raise InputError(f"unknown environment {name!r}; choose one of {', '.join(REGISTRY)}")
    return name
