"""The creditlens command line: score, train, compare and inspect credit assignment in self-distillation.

Each subcommand lives in one module of creditlens/commands/ (listed in COMMANDS below), which defines
register(subparsers) and run(args). Bad input ends in one line, "creditlens CMD: error: MESSAGE",
and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from creditlens import __version__
from creditlens.commands import app, compare, demo, envs, headroom, score, study, train
from creditlens.errors import CreditlensError

COMMANDS = (train, score, compare, study, envs, headroom, app, demo)  # the order of `creditlens --help`


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other creditlens error (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per module of ``COMMANDS`` (subparsers are ``Parser`` too)."""
    parser = Parser(prog="creditlens", description=__doc__.split("\n\n")[0],
                    epilog="Run `creditlens COMMAND --help` for the options of a command.")
    parser.add_argument("--version", action="version", version=f"creditlens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def one_line(error: BaseException) -> str:
    """The error's message on one line (an ``OSError`` keeps its file name)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code (bad input: one line, 2)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # creditlens never contacts a model hub (models.resolve finds models locally)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed as one line
        return int(stop.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (CreditlensError, ValueError, OSError) as error:
        print(f"creditlens {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"creditlens {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
