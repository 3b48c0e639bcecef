"""The names creditlens accepts for algorithms, contrast pools and CREDIT reward forms: one torch-free
source of truth, read by ``creditlens.credit``, the training config and the CLI's ``--help``."""

ALGOS = ("grpo", "sd", "credit")  # creditlens train --algo: GRPO, self-distillation, CREDIT
POOLS = ("mean", "logmeanexp")  # how K contrast log-probs pool into B_t (docs/CREDIT-MATH.md)
FORMS = ("teacher", "shortcut", "contrastive")  # CREDIT reward forms (creditlens.credit.credit_rewards)
DEFAULT_FORM = "contrastive"  # chosen by the pre-registered rule of docs/results.md, "Default"
AXES = ("input", "feedback")  # contrast axis: other inputs (x_j, f, y) or other feedback (x, f_j, y)
