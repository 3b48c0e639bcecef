"""GRPO, SD and CREDIT training on TRL with per-token run logs (see ``docs/training.md``).

The trainers import TRL's experimental SDPO; its import warning is silenced here on purpose.
"""

import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
