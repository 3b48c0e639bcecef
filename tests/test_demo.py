"""``creditlens demo`` end to end with the tiny model (the embedded one is what `make demo` uses)."""

import json
from pathlib import Path

from creditlens import cli, models, schema

DATA = Path(__file__).resolve().parents[1] / "data"


def test_demo_scores_every_bundled_example(tmp_path, capsys):
    assert cli.main(["demo", "--model", "tiny", "--no-app", "--out", str(tmp_path)]) == 0
    table = schema.read_token_table(tmp_path / "demo-scored" / "tokens.parquet")
    _, tokenizer = models.load("tiny")
    examples = [json.loads(line) for line in (DATA / "examples.jsonl").read_text().splitlines() if line.strip()]
    counts = table.groupby("example_id").size()
    assert len(counts) == len(examples)
    for example in examples:
        expected = len(tokenizer(example["response"], add_special_tokens=False)["input_ids"])
        assert counts[str(example["example_id"])] == expected
    assert table["credit_reward"].notna().all()
    assert "per-token table" in capsys.readouterr().out
