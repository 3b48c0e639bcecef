"""`creditlens score` ends with a table of the per-example sums, equal to sums over the token table it wrote."""

from __future__ import annotations

import json

import pandas as pd

from creditlens import cli, schema


def test_score_prints_the_per_example_sums(tmp_path, capsys):
    examples = tmp_path / "ex.jsonl"
    examples.write_text("".join(json.dumps({"example_id": f"ex-{i}", "prompt": f"question {i}", "feedback": f"hint {i}",
                                            "response": f"answer {i} is {i * 7}"}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    assert cli.main(["score", str(examples), "--model", "tiny", "--contrast", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split("per-example sums")[1].splitlines()[1:]
    header, rows = printed[0].split(), [line.split() for line in printed[2:]]
    assert header[:5] == ["n_tokens", "sd_sum", "specific_sum", "shortcut_sum", "credit_sum"]
    table = schema.read_token_table(out / "tokens.parquet")
    counted = table[table["mask"]]
    sums = counted.groupby("example_id")[["sd_reward", "specific", "shortcut", "credit_reward"]].sum()
    assert [r[0] for r in rows] == ["ex-0", "ex-1", "ex-2"]  # example ids as given
    for row in rows:
        expected = sums.loc[row[0]]
        shown = [float(v) for v in row[2:6]]
        assert shown == [round(float(expected[c]), 3) for c in ("sd_reward", "specific", "shortcut", "credit_reward")]
        assert int(row[1]) == int((table["example_id"] == row[0]).sum())
    assert pd.read_parquet(out / "summary.parquet")["example_id"].tolist() == ["ex-0", "ex-1", "ex-2"]
