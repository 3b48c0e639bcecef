"""The four notebooks run top to bottom on small bundled data (tiny model, fixture runs, scored sets and a
hand-written study grid), and are committed with their outputs stripped."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import appdata  # noqa: E402

from creditlens import runs, schema  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_pmi_identity", "02_token_credit", "03_compare_runs", "04_heldout_study")


def execute(name: str, monkeypatch, **env: str) -> nbformat.NotebookNode:
    """Run a notebook in a kernel of this interpreter with ``env`` set; returns the executed notebook."""
    for key, value in {"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **env}.items():
        monkeypatch.setenv(key, value)
    # the python3 kernel spec starts "python": make that this interpreter (the .venv's) even when not activated
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list[str]:
    """Every output of ``kind`` ("text/html", "text/plain", "image/png", "stream") in order."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "stream" and output["output_type"] == "stream":
                found.append(output["text"])
            elif kind in output.get("data", {}):
                found.append(output["data"][kind])
    return found


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in notebook.cells) >= 3
    assert "creditlens." not in "".join(c.source for c in code).replace("from creditlens import", "")


@pytest.mark.slow
def test_01_pmi_identity(monkeypatch):
    notebook = execute("01_pmi_identity", monkeypatch, CREDITLENS_NB_MODEL="tiny", CREDITLENS_NB_SAMPLES="3",
                       CREDITLENS_NB_MAX_NEW_TOKENS="8")
    html = "".join(outputs(notebook, "text/html"))
    assert html.count('class="cl-token"') == 5  # the exact model's response length
    assert "Compatibility gap</b> over 4 examples" in html and "within 2 s.e." in html
    assert len(outputs(notebook, "image/png")) == 2
    text = "".join(outputs(notebook, "stream"))
    assert "12 examples, max |gap| = " in text and "nan" not in text


def test_02_token_credit_on_scored_file(monkeypatch, tmp_path):
    scored = appdata.make_scored_dir(tmp_path / "scored")
    notebook = execute("02_token_credit", monkeypatch, CREDITLENS_SCORED=str(scored))
    text = "".join(outputs(notebook, "stream"))
    assert "8 responses, 48 counted tokens, K = 2 contrasts" in text
    html = "".join(outputs(notebook, "text/html"))
    assert "Generic share of SD credit" in html
    assert html.count('class="cl-token"') == 2 * appdata.exact_model().length
    assert len(outputs(notebook, "image/png")) == 1


def test_03_compare_runs(monkeypatch, tmp_path):
    appdata.make_runs_dir(tmp_path / "runs")
    notebook = execute("03_compare_runs", monkeypatch, CREDITLENS_RUNS_DIR=str(tmp_path / "runs"))
    html = "".join(outputs(notebook, "text/html"))
    for algo in appdata.ALGOS:
        assert f"{algo}-seed0" in html
    assert html.count('class="cl-token"') == 3 * appdata.exact_model().length
    assert len(outputs(notebook, "image/png")) == 1


def test_03_shows_a_response_with_counted_tokens(monkeypatch, tmp_path):
    """The first response of every run is a passed one (all tokens masked): the notebook skips it."""
    root = appdata.make_runs_dir(tmp_path / "runs")
    for run in runs.list_runs(root):
        step = run.token_steps()[-1]
        table = run.tokens(step)
        first = table["example_id"] == table["example_id"].iloc[0]
        table.loc[first, "mask"] = False
        table.loc[first, list(schema.REWARD_COLUMNS)] = 0.0
        runs.write_step_tokens(run.path, step, table)
    notebook = execute("03_compare_runs", monkeypatch, CREDITLENS_RUNS_DIR=str(root))
    shown = re.findall(r'data-value="([^"]+)"', "".join(outputs(notebook, "text/html")))
    assert len(shown) == 3 * appdata.exact_model().length
    assert "nan" not in shown  # masked tokens show as nan: every heatmap is of a counted response


# (score_val, score_test) at steps 0, 10, 20 of each run of a small `confirm` grid: 2 of its methods, 3 seeds
HELDOUT = {
    ("sd", 1): [(0.40, 0.41), (0.52, 0.50), (0.47, 0.49)],
    ("sd", 2): [(0.40, 0.41), (0.45, 0.44), (0.55, 0.53)],
    ("sd", 3): [(0.40, 0.41), (0.43, 0.46), (0.42, 0.45)],
    ("credit-shortcut-lam0.5", 1): [(0.40, 0.41), (0.50, 0.52), (0.58, 0.57)],
    ("credit-shortcut-lam0.5", 2): [(0.40, 0.41), (0.61, 0.59), (0.56, 0.60)],
    ("credit-shortcut-lam0.5", 3): [(0.40, 0.41), (0.39, 0.40), (0.44, 0.43)],
}


def test_04_heldout_study(monkeypatch, tmp_path):
    """Only `confirm`'s comparisons with both methods present are tested; the printed mean difference of the
    early-stopping score equals numpy's, paired by seed."""
    for (method, seed), scores in HELDOUT.items():
        run = tmp_path / f"{method}-s{seed}"
        run.mkdir()
        run.joinpath("eval.jsonl").write_text("".join(
            json.dumps({"step": 10 * i, "score_val": val, "score_test": test}) + "\n" for i, (val, test) in enumerate(scores)))
    (tmp_path / "report").mkdir()
    profiles = [{"step": step, "run": f"{method}-s{seed}", "cue_letter": 0.1, "filler": 0.0, "cue_share": 0.2, "cue_share_sd_reward": 0.3,
                 "passed_seen": 0.4, "passed_unseen": 0.5} for method, seed in HELDOUT for step in (5, 10, 15, 20)]
    pd.DataFrame(profiles).to_csv(tmp_path / "report" / "rollout_profiles.csv", index=False)
    notebook = execute("04_heldout_study", monkeypatch, CREDITLENS_NB_STUDY=str(tmp_path), CREDITLENS_NB_PRESET="confirm")
    es = {key: scores[int(np.argmax([val for val, _ in scores]))][1] for key, scores in HELDOUT.items()}
    expected = np.mean([es["credit-shortcut-lam0.5", s] - es["sd", s] for s in (1, 2, 3)])
    text = "".join(outputs(notebook, "stream"))
    assert "6 runs of 2 methods, seeds [1, 2, 3]" in text
    assert "family primary: 1 of 2 comparisons testable" in text and "family practitioner: 0 of 4" in text
    shown = re.search(r"credit-shortcut-lam0\.5 - sd: mean difference ([-+]\d\.\d{4}) .* over 3 seeds", text)
    assert shown and float(shown.group(1)) == pytest.approx(expected, abs=5e-5)
    assert "credit-contrastive" not in text
    html = "".join(outputs(notebook, "text/html"))
    assert "passed_unseen" in html and "late" in html  # the mechanism table of report/rollout_profiles.csv
    assert len(outputs(notebook, "image/png")) == 1

@pytest.mark.slow
def test_02_token_credit_scores_examples_with_a_model(monkeypatch, tmp_path):
    examples = tmp_path / "examples.jsonl"
    rows = [dict(prompt=f"Question {i}: what is {i} + {i}?", feedback=f"Wrong: the answer is {2 * i}.",
                 response=f"The answer is {3 * i}.", prompt_id=f"q{i}", kind="science", example_id=f"sci-{i:02d}")
            for i in range(4)]
    examples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    notebook = execute("02_token_credit", monkeypatch, CREDITLENS_NB_MODEL="tiny", CREDITLENS_EXAMPLES=str(examples),
                       CREDITLENS_NB_EXAMPLES="3")
    text = "".join(outputs(notebook, "stream"))
    assert "3 responses" in text and re.search(r"example sci-0[0-2]: generic share", text)  # ids kept as given
    assert "Generic share of SD credit" in "".join(outputs(notebook, "text/html"))
