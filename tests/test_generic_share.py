"""The generic share (docs/CREDIT-MATH.md section 9) and its check against token labels, on a table whose every
number is worked out by hand below."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from creditlens import stats

# mask, sd_reward, shortcut, label -> what section 9 does with the token
ROWS = [
    (True, 1.0, 0.3, "generic"),  # moved: generic part 0.3, fraction 0.3
    (True, 2.0, 3.0, "generic"),  # moved: shortcut above sd_reward, clipped to 2.0, fraction 1
    (True, 0.5, -1.0, "specific"),  # moved: no other input raises it, generic part 0, fraction 0
    (True, 0.01, 5.0, "generic"),  # below MOVED: the feedback does not move it, left out
    (True, -2.0, -3.0, "generic"),  # a penalty: left out
    (False, 4.0, 4.0, "generic"),  # not counted: left out
    (True, 1.5, 0.75, "specific"),  # moved: generic part 0.75, fraction 0.5
]


@pytest.fixture
def table() -> pd.DataFrame:
    mask, sd, shortcut, _ = zip(*ROWS, strict=True)
    return pd.DataFrame({"example_id": ["a", "a", "a", "b", "b", "b", "b"], "mask": mask, "sd_reward": sd,
                         "shortcut": shortcut, "specific": [s - c for s, c in zip(sd, shortcut, strict=True)]})


@pytest.fixture
def labels(table) -> pd.Series:
    return pd.Series([row[3] for row in ROWS], index=table.index)


def test_share_of_positive_moved_credit(table):
    assert stats.generic_share(table) == pytest.approx((0.3 + 2.0 + 0.0 + 0.75) / (1.0 + 2.0 + 0.5 + 1.5))
    assert stats.generic_share(table, moved=0.0) == pytest.approx((3.05 + 0.01) / (5.0 + 0.01))
    assert math.isnan(stats.generic_share(table, moved=10.0))
    by_example = stats.generic_share_by_example(table)
    assert by_example["a"] == pytest.approx(2.3 / 3.5) and by_example["b"] == pytest.approx(0.75 / 1.5)


def test_validation_against_labels(table, labels):
    check = stats.generic_share_validation(table, labels)
    assert check["n_tokens"] == 4 and check["share"] == pytest.approx(stats.generic_share(table))
    assert check["label_share"] == pytest.approx((1.0 + 2.0) / 5.0)  # credit of the generic-labelled moved tokens
    assert check["auroc"] == pytest.approx(3 / 4)  # generic {0.3, 1} vs specific {0, 0.5}: 3 of 4 pairs ordered
    calibration = check["calibration"].set_index("bin")
    assert calibration["n_tokens"].tolist() == [1, 1, 1, 0, 1]
    assert calibration["credit"].tolist() == pytest.approx([0.5, 1.0, 1.5, 0.0, 2.0])
    assert calibration["generic_fraction"].dropna().tolist() == pytest.approx([0.0, 0.3, 0.5, 1.0])
    assert calibration["generic_labels"].dropna().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert math.isnan(calibration.loc["[0.6, 0.8)", "generic_fraction"])


def test_table_without_contrasts_is_refused(table):
    with pytest.raises(ValueError, match="score with `--contrast K`"):
        stats.generic_share(table.drop(columns=["shortcut"]))
