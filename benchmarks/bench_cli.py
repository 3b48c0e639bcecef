"""Start-up time of the ``creditlens`` command line (issue target: under 1.5 s on the 2-core machine).

Runs ``creditlens --help``, ``creditlens envs list`` and ``creditlens train --help`` (and a few more)
as fresh processes, ``--repeats`` times each, and prints the median wall time next to a bare Python
start and an ``import torch`` measured in the same run, so the ratios hold on any machine. A command
that imports torch at start-up costs at least the ``import torch`` line.

    python benchmarks/bench_cli.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "creditlens --help": ["-m", "creditlens.cli", "--help"],
    "creditlens envs list": ["-m", "creditlens.cli", "envs", "list"],
    "creditlens train --help": ["-m", "creditlens.cli", "train", "--help"],
    "creditlens score --help": ["-m", "creditlens.cli", "score", "--help"],
    "creditlens app --port 99999 (refused)": ["-m", "creditlens.cli", "app", "--port", "99999"],
}
REFERENCES = {"python -c pass": ["-c", "pass"], "python -c 'import torch'": ["-c", "import torch"]}


def median_seconds(args: list[str], repeats: int) -> float:
    """Median wall time of ``python ARGS`` over ``repeats`` fresh processes (after one warm-up run)."""
    times = []
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if attempt:  # the first run warms the file-system cache
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="processes per command (default 5)")
    args = parser.parse_args()
    python = median_seconds(REFERENCES["python -c pass"], args.repeats)
    torch_import = median_seconds(REFERENCES["python -c 'import torch'"], args.repeats)
    print(f"{'command':42s} {'median s':>9s} {'x bare python':>14s} {'/ import torch':>15s}")
    print(f"{'python -c pass':42s} {python:9.2f} {1.0:14.1f} {python / torch_import:15.2f}")
    print(f"{'python -c import torch':42s} {torch_import:9.2f} {torch_import / python:14.1f} {1.0:15.2f}")
    for name, command in COMMANDS.items():
        seconds = median_seconds(command, args.repeats)
        print(f"{name:42s} {seconds:9.2f} {seconds / python:14.1f} {seconds / torch_import:15.2f}")


if __name__ == "__main__":
    main()
