"""A generation batch whose rollouts all get the same reward is flagged (no learning signal), with one warning."""

from __future__ import annotations

import types
import warnings

import pytest
import torch

from creditlens.training.trainers import check_signal


def test_identical_rewards_are_flagged_and_warned_once():
    trainer = types.SimpleNamespace()
    with pytest.warns(RuntimeWarning, match="no learning signal: all 4 rollouts .* got reward 0,"):
        check_signal(trainer, torch.zeros(4, 1))
    assert trainer.no_signal
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second flagged batch does not warn again
        check_signal(trainer, torch.ones(4, 2))
        assert trainer.no_signal
        rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # totals 1, 1, 2: a signal
        assert check_signal(trainer, rewards) is rewards and not trainer.no_signal
        check_signal(trainer, torch.tensor([[1.0, float("nan")], [1.0, 0.0]]))  # nan-summed: both 1
        assert trainer.no_signal
