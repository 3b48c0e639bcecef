"""Run logs of the shortcut testbed carry each token's ground-truth ``label`` (token_log.records_table)."""

from __future__ import annotations

import torch

from creditlens import envs
from creditlens.credit import CreditSpec
from creditlens.training.token_log import Rollout, make_record, records_table

WORDS = ["ok", "answer", ":", "e", "a", "c", "h", ".", "<end>"]


class WordTokenizer:
    def batch_decode(self, rows):
        return [" ".join(WORDS[t] for t in row) for row in rows]

    def decode(self, row, skip_special_tokens=True):
        return " ".join(WORDS[t] for t in row)


def test_records_table_labels_every_token_with_the_environment_labels():
    env = envs.get("shortcut")
    ids = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 6, 5, 4, 3, 7, 8, 8]])
    lengths = [9, 8]
    mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]).long()
    lp = -torch.rand(2, 9)
    rollouts = [Rollout(prompt="p", prompt_id=f"p{i}", outcome_reward=0.0, passed=False, feedback="f") for i in range(2)]
    record = make_record(rollouts, ids, mask, lp, lp - 0.1, torch.zeros(2, 9), mask, torch.zeros(2, 9),
                         torch.zeros(2, 9), contrast_lp=-torch.rand(2, 1, 9), spec=CreditSpec(lam=0.0))
    table = records_table([record], WordTokenizer(), 3, 0, {"algo": "sd"}, token_labels=env.token_labels)
    for sample, n in enumerate(lengths):
        rows = table[table["sample"] == sample].sort_values("position")
        assert len(rows) == n
        assert rows["label"].tolist() == env.token_labels(None, [WORDS[t] for t in ids[sample, :n].tolist()])
    assert table.loc[table["token"] == "c", "label"].eq("specific").all()
    assert table.loc[table["token"] == "ok", "label"].eq("generic").all()
    plain = records_table([record], WordTokenizer(), 3, 0, {"algo": "sd"})
    assert "label" not in plain.columns
