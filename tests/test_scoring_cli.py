"""``creditlens score`` on the tiny model: outputs, and readable errors for bad input lines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from creditlens import cli, models, schema
from creditlens.credit import CreditSpec
from creditlens.scoring import Scorer


def write_examples(path, n=4):
    rows = [
        {
            "example_id": f"x{i}",
            "kind": "science",
            "prompt": f"How many legs do {i} spiders have?",
            "feedback": f"Magnitude: expected {8 * i}.",
            "response": f"Answer: {6 * i}",
        }
        for i in range(1, n + 1)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_score_writes_tables_equal_to_the_api(tmp_path):
    rows = write_examples(tmp_path / "ex.jsonl")
    out = tmp_path / "out"
    argv = ["score", str(tmp_path / "ex.jsonl"), "--model", "tiny", "--contrast", "2", "--lam", "0.3", "--out", str(out)]
    assert cli.main(argv + ["--gap-samples", "2"]) == 0
    table = schema.read_token_table(out / "tokens.parquet")
    summary = pd.read_parquet(out / "summary.parquet")
    assert sorted(summary["example_id"]) == [r["example_id"] for r in rows]
    assert (summary["kind"] == "science").all() and summary["gap"].notna().all()
    assert len(pd.read_csv(out / "summary.csv")) == len(rows)
    model, tok = models.load("tiny")
    expected = Scorer(model, tok, progress=False).score(rows, spec=CreditSpec(n_contrast=2, lam=0.3))
    np.testing.assert_allclose(table["credit_reward"], expected["credit_reward"], atol=1e-6)


def test_malformed_lines_name_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    write_examples(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ['{"prompt": "x", "response": "y"'] + lines[2:]) + "\n")
    assert cli.main(["score", str(path), "--model", "tiny", "--out", str(tmp_path / "o")]) == 2
    assert f"{path}:3: not valid JSON" in capsys.readouterr().err
    path.write_text("\n".join(lines[:1] + ['{"prompt": "x", "response": "y"}']) + "\n")
    assert cli.main(["score", str(path), "--model", "tiny", "--out", str(tmp_path / "o")]) == 2
    assert f"{path}:2: example 1: missing field 'feedback'" in capsys.readouterr().err
    assert cli.main(["score", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2


def test_form_is_applied_and_recorded_in_table_and_summary(tmp_path):
    rows = write_examples(tmp_path / "ex.jsonl")
    out = tmp_path / "out"
    argv = ["score", str(tmp_path / "ex.jsonl"), "--model", "tiny", "--contrast", "2", "--lam", "0.4",
            "--form", "shortcut", "--out", str(out)]
    assert cli.main(argv) == 0
    table = schema.read_token_table(out / "tokens.parquet")
    summary = pd.read_parquet(out / "summary.parquet")
    assert (table["form"] == "shortcut").all() and (table["lam"] == 0.4).all()
    assert (summary["form"] == "shortcut").all() and (summary["lam"] == 0.4).all()
    baseline = np.stack(table["contrast_logprobs"].to_list()).mean(1)
    expected = table["sd_reward"] - 0.4 * (baseline - table["student_logprob"])
    np.testing.assert_allclose(table["credit_reward"], expected, atol=1e-5)
    assert len(summary) == len(rows)


def test_rescoring_replaces_the_result_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    write_examples(tmp_path / "ex.jsonl")
    out = tmp_path / "out"
    argv = ["score", str(tmp_path / "ex.jsonl"), "--model", "tiny", "--contrast", "1", "--out", str(out)]
    assert cli.main(argv + ["--lam", "0.2"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"tokens.parquet", "summary.parquet", "summary.csv"}

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)  # the last file of the new result fails
    assert cli.main(argv + ["--lam", "0.9"]) == 2
    assert "disk full" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old result, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex.jsonl", "out"]  # no staging folder left
    monkeypatch.undo()

    assert cli.main(argv + ["--lam", "0.9"]) == 0
    assert (schema.read_token_table(out / "tokens.parquet")["lam"] == 0.9).all()
    assert (pd.read_csv(out / "summary.csv")["lam"] == 0.9).all()

    (out / "notes.txt").write_text("mine")
    assert cli.main(argv) == 2
    assert "holds 'notes.txt', not a `creditlens score` output" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and (schema.read_token_table(out / "tokens.parquet")["lam"] == 0.9).all()
