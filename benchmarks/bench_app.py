"""Time to open the dashboard's Token credit page on a run of 100k logged tokens.

Writes a synthetic run (one step, ``--responses`` x ``--length`` tokens, K = 2 contrasts) through
``creditlens.runs``, then drives ``app/pages/1_Token_credit.py`` with Streamlit's AppTest:
cold (empty cache: read + validate the Parquet and render), warm (the cached table, another
response), and the heatmap HTML alone. The issue's target is under 2 s for the cold open.

    python benchmarks/bench_app.py [--responses 400] [--length 250]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from creditlens import runs, schema, viz
from creditlens.commands.app import APP_ENTRY
from creditlens.credit import CreditSpec

APP_PAGE = APP_ENTRY.parent / "pages" / "1_Token_credit.py"


def synthetic_run(root: Path, responses: int, length: int, k: int = 2, seed: int = 0) -> Path:
    """A run directory with one step of ``responses * length`` tokens of random log-probs."""
    generator = torch.Generator().manual_seed(seed)
    teacher = -torch.rand(responses, length, generator=generator, dtype=torch.float64) * 3
    student = -torch.rand(responses, length, generator=generator, dtype=torch.float64) * 3
    contrast = -torch.rand(responses, k, length, generator=generator, dtype=torch.float64) * 3
    token_ids = torch.randint(0, 1000, (responses, length), generator=generator)
    words = [f" w{i}" for i in range(1000)]
    table = schema.build_token_table(
        example_ids=[f"ex-{i}" for i in range(responses)],
        prompt_ids=[f"p-{i % 50}" for i in range(responses)],
        token_ids=token_ids,
        tokens=[[words[t] for t in row] for row in token_ids.tolist()],
        teacher_lp=teacher,
        student_lp=student,
        contrast_lp=contrast,
        example_columns={"prompt": [f"prompt {i}" for i in range(responses)],
                         "feedback": [f"feedback {i}" for i in range(responses)],
                         "step": [10] * responses, "sample": list(range(responses))}, spec=CreditSpec()
    )
    run_dir = root / "big-run"
    runs.write_manifest(run_dir, {"name": "big-run", "algo": "credit", "env": "synthetic", "model": "none"})
    runs.append_jsonl(run_dir / runs.EVAL, {"step": 10, "score": 0.5})
    runs.write_step_tokens(run_dir, 10, table)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=400)
    parser.add_argument("--length", type=int, default=250)
    args = parser.parse_args()
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as folder:
        run_dir = synthetic_run(Path(folder), args.responses, args.length)
        n_tokens = args.responses * args.length
        size = runs.token_path(run_dir, 10).stat().st_size / 2**20
        os.environ["CREDITLENS_RUNS_DIR"] = folder
        AppTest.from_file(str(APP_ENTRY), default_timeout=60).run()

        start = time.perf_counter()
        at = AppTest.from_file(str(APP_PAGE), default_timeout=60).run()
        cold = time.perf_counter() - start
        assert not at.exception, at.exception
        assert at.html[0].proto.body.count('class="cl-token"') == args.length

        start = time.perf_counter()
        at.sidebar.selectbox(key="example").set_value(args.responses - 1).run()
        warm = time.perf_counter() - start
        assert not at.exception and at.html[0].proto.body.count('class="cl-token"') == args.length

        table = runs.load_run(run_dir).tokens(10)
        start = time.perf_counter()
        viz.token_heatmap_html(viz.select_example(table, {"step": 10, "sample": 7, "example_id": "ex-7"}))
        render = time.perf_counter() - start

    print(f"run of {n_tokens} tokens ({args.responses} responses x {args.length}), parquet {size:.1f} MiB")
    print(f"token page, cold open (read + validate + index + render): {cold:.2f} s  (target < 2 s)")
    print(f"token page, another response (cached table):            {warm:.2f} s")
    print(f"heatmap HTML of one {args.length}-token response:               {1000 * render:.1f} ms")


if __name__ == "__main__":
    main()
