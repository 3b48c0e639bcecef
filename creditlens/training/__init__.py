"""GRPO, SD and CREDIT training on TRL (see ``docs/training.md``).

``from creditlens.training import CreditTrainer, CreditConfig`` gives the drop-in replacement of TRL's
``SDPOTrainer, SDPOConfig``; they are imported on first use, so ``creditlens.training.config`` stays light.
The trainers import TRL's experimental SDPO; its import warning is silenced here on purpose.
"""

import os
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

__all__ = ["CreditConfig", "CreditTrainer"]


def __getattr__(name: str) -> Any:
    if name == "CreditTrainer":
        from creditlens.training.credit_trainer import CreditTrainer

        return CreditTrainer
    if name == "CreditConfig":
        from creditlens.training.credit_config import CreditConfig

        return CreditConfig
    raise AttributeError(f"module 'creditlens.training' has no attribute {name!r}")
