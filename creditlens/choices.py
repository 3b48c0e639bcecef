"""The algorithms ``creditlens train`` runs: torch-free, so the CLI's ``--help`` lists them. The CREDIT
settings (reward forms, pools, contrast axes, their defaults) belong to ``creditlens.credit.CreditSpec``."""

ALGOS = ("grpo", "sd", "credit")  # creditlens train --algo: GRPO, self-distillation, CREDIT
