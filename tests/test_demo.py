"""``creditlens demo`` end to end with the tiny model (the embedded one is what `make demo` uses):
every bundled example scored, the pMI gap of a few, scores reused when nothing changed, a busy port
refused before scoring."""

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from creditlens import cli, models, schema
from creditlens.commands import app, demo

DATA = Path(__file__).resolve().parents[1] / "data"
FAST_GAP = ["--gap-samples", "2", "--gap-max-new-tokens", "6"]


@pytest.mark.slow
def test_demo_scores_every_example_estimates_the_gap_and_reuses_scores(tmp_path, capsys):
    args = ["demo", "--model", "tiny", "--no-app", "--out", str(tmp_path), "--gap-examples", "3", *FAST_GAP]
    assert cli.main(args) == 0
    scored = tmp_path / "demo-scored"
    table = schema.read_token_table(scored / "tokens.parquet")
    _, tokenizer = models.load("tiny")
    examples = [json.loads(line) for line in (DATA / "examples.jsonl").read_text().splitlines() if line.strip()]
    counts = table.groupby("example_id").size()
    assert len(counts) == len(examples)
    for example in examples:
        expected = len(tokenizer(example["response"], add_special_tokens=False)["input_ids"])
        assert counts[str(example["example_id"])] == expected
    assert table["credit_reward"].notna().all()

    summary = pd.read_parquet(scored / "summary.parquet").set_index("example_id")
    estimated = summary[summary["pmi"].notna()]
    first_of_each_kind = [next(e["example_id"] for e in examples if e["kind"] == kind)
                          for kind in dict.fromkeys(e["kind"] for e in examples)]
    assert sorted(estimated.index) == sorted(first_of_each_kind)
    sd_sums = table[table["mask"]].groupby("example_id")["sd_reward"].sum()
    np.testing.assert_allclose(estimated["sd_sum"], sd_sums[estimated.index], rtol=1e-9)
    np.testing.assert_allclose(estimated["gap"], estimated["sd_sum"] - (estimated["log_pf_xy"] - estimated["log_pf_x"]))
    assert np.isfinite(estimated["log_pf_x_se"]).all()  # M = 2 samples: a standard error exists
    out = capsys.readouterr().out
    assert "compatibility gap of 3 example(s)" in out and "per-token table" in out

    written = (scored / "tokens.parquet").stat().st_mtime_ns
    assert cli.main(args) == 0
    assert "reusing the scores" in capsys.readouterr().out
    assert (scored / "tokens.parquet").stat().st_mtime_ns == written
    recorded = json.loads((scored / demo.FINGERPRINT).read_text())
    assert recorded["gap_max_new_tokens"] == 6 and recorded["model"] == "tiny"


def test_fingerprint_changes_with_examples_options_and_code(tmp_path, monkeypatch):
    examples = tmp_path / "examples.jsonl"
    examples.write_text((DATA / "examples.jsonl").read_text())
    options = {"model": "tiny", "gap_examples": 3, "gap_samples": 2, "gap_max_new_tokens": 6}
    base = demo.fingerprint(examples, options)
    assert demo.fingerprint(examples, dict(options)) == base
    assert demo.fingerprint(examples, {**options, "gap_samples": 3}) != base
    examples.write_text(examples.read_text() + "\n")
    assert demo.fingerprint(examples, options) != base
    examples.write_text((DATA / "examples.jsonl").read_text())
    package = tmp_path / "package"
    for name in demo.SCORING_CODE:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_bytes((demo.PACKAGE / name).read_bytes())
    monkeypatch.setattr(demo, "PACKAGE", package)
    assert demo.fingerprint(examples, options) == base
    (package / "gap.py").write_text((package / "gap.py").read_text() + "# changed\n")
    assert demo.fingerprint(examples, options) != base


def test_demo_refuses_a_busy_port_before_scoring(tmp_path, capsys):
    port = app.free_port()
    with socket.socket() as sock:
        sock.bind(("localhost", port))
        sock.listen()
        assert cli.main(["demo", "--model", "tiny", "--out", str(tmp_path), "--port", str(port)]) == 2
    assert f"port {port} on localhost is busy" in capsys.readouterr().err
    assert not (tmp_path / "demo-scored").exists()


def test_gap_subset_takes_one_example_of_each_kind_first():
    rows = [{"example_id": f"{kind}-{i}", "kind": kind} for kind in ("code", "tools") for i in range(3)]
    assert [r["example_id"] for r in demo.gap_subset(rows, 3)] == ["code-0", "tools-0", "code-1"]
    assert demo.gap_subset(rows, 0) == []
