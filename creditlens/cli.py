"""The ``creditlens`` command line: every module in ``creditlens.commands`` adds one subcommand."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from creditlens import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per module of :mod:`creditlens.commands`."""
    parser = argparse.ArgumentParser(prog="creditlens", description=__doc__)
    parser.add_argument("--version", action="version", version=f"creditlens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"creditlens.commands.{module}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; errors print one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"creditlens {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
