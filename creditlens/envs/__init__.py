"""Environments with rich feedback: code (HumanEval), tools (BFCL), science, and the shortcut testbed."""

from creditlens.envs.base import SPLITS, Environment, Outcome, Problem
from creditlens.envs.registry import get, names

__all__ = ["SPLITS", "Environment", "Outcome", "Problem", "get", "names"]
