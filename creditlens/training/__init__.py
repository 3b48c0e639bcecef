"""GRPO, SD and CREDIT training on TRL (see ``docs/training.md``).

``from creditlens.training import CreditTrainer, CreditConfig`` gives the drop-in replacement of TRL's
``SDPOTrainer, SDPOConfig``; they are imported on first use, so ``creditlens.training.config`` stays light.
The trainers build on TRL's experimental SDPO: its one-time import warning is silenced here, for this
import only (no environment variable is set, so the rest of the process keeps TRL's notices).
"""

import warnings
from typing import Any

from trl.import_utils import TRLExperimentalWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TRLExperimentalWarning)
    import trl.experimental  # noqa: F401  (warns once, on its first import)

__all__ = ["CreditConfig", "CreditTrainer"]


def __getattr__(name: str) -> Any:
    if name == "CreditTrainer":
        from creditlens.training.credit_trainer import CreditTrainer

        return CreditTrainer
    if name == "CreditConfig":
        from creditlens.training.credit_config import CreditConfig

        return CreditConfig
    raise AttributeError(f"module 'creditlens.training' has no attribute {name!r}")
