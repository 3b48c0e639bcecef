"""Config keys that creditlens once spelled its own way, and the TRL names that replaced them.

The one table both readers use: :func:`creditlens.training.config.load_config` refuses an old key with a
line naming the new one, and :func:`upgrade` reads a ``manifest.json`` config written before the rename
(``compare`` hashes old and new runs alike). Torch-free.
"""

from __future__ import annotations

from typing import Any

from creditlens.errors import ConfigError

RENAMED = {
    "teacher": "teacher_model_kind",
    "include_feedback": "include_environment_feedback",
    "save_every": "save_steps",
    "gradient_checkpointing": "activation_checkpointing",
    "tensorboard": "report_to",
}
"""Old key -> the TRL argument that replaced it (``tensorboard: true`` is ``report_to: [tensorboard]``)."""
PASSTHROUGH = "trl"
"""The old section of further TRL arguments: they are now top-level keys like every other TRL argument."""


def rename_hint(key: str) -> str | None:
    """What to write instead of the old key ``key``; None for a current key."""
    if key == PASSTHROUGH:
        return "write its keys (TRL arguments) at the top level of the config"
    if key == "tensorboard":
        return "write report_to: [tensorboard] (or report_to: [])"
    if key in RENAMED:
        return f"write {RENAMED[key]} (TRL's name)"
    return None


def refuse_renamed(key: str, source: str) -> None:
    """``ConfigError`` naming ``source``, the old key and what to write, when ``key`` is an old spelling."""
    hint = rename_hint(key)
    if hint is not None:
        raise ConfigError(f"{source}: key {key!r} was renamed: {hint}")


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """A manifest's config with old keys under their TRL names and the ``trl`` section flattened into it."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == PASSTHROUGH and isinstance(value, dict):
            out.update(value)
        elif key == "tensorboard":
            out["report_to"] = ["tensorboard"] if value else []
        else:
            out[RENAMED.get(key, key)] = value
    return out
