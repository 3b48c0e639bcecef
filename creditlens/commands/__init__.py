"""Subcommands of the ``creditlens`` CLI: each module defines ``register(subparsers)``."""
