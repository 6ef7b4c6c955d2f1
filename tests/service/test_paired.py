"""The paired bootstrap and Holm's correction against cases worked out by hand."""
import numpy as np
import pytest

from camserve.service.metrics.paired import holm, paired_bootstrap, verdict


def test_two_images_bootstrap_by_hand():
    # differences d = (2, 0), observed mean 1; resampled means are 2, 1, 1, 0 with probability 1/4 each, so
    # |d* - 1| >= 1 (d* in {0, 2}) has probability 1/2, and the 2.5th / 97.5th percentiles are 0 and 2
    r = paired_bootstrap(np.array([2.0, 0.0]), np.zeros(2), resamples=40000)
    assert (r["a"], r["b"], r["difference"], r["n"]) == (1.0, 0.0, 1.0, 2)
    assert r["p"] == pytest.approx(0.5, abs=0.01)
    assert (r["low"], r["high"]) == (0.0, 2.0)


def test_three_images_bootstrap_by_hand():
    # d = (3, 0, 0): a resampled mean is k, the number of times image 0 is drawn, k ~ Binomial(3, 1/3);
    # |k - 1| >= 1 for k in {0, 2, 3}: (8 + 6 + 1) / 27
    r = paired_bootstrap(np.array([3.0, 0.0, 0.0]), np.zeros(3), resamples=40000, seed=1)
    assert r["p"] == pytest.approx(15 / 27, abs=0.01)


def test_pairing_removes_what_both_share():
    # huge spread between images, the same +1 on every one: unpaired intervals overlap, the paired test is sure
    base = np.random.default_rng(0).normal(0, 100, 50)
    r = paired_bootstrap(base + 1, base, resamples=2000)
    assert r["difference"] == pytest.approx(1.0)
    assert r["low"] == pytest.approx(1.0) and r["high"] == pytest.approx(1.0)
    assert r["p"] == 1 / 2000   # never as far from 1 as 1 is from 0: the smallest p the resamples can show


def test_nan_rows_leave_both_sides_and_statistics_see_whole_rows():
    a = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0]])
    r = paired_bootstrap(a, b, statistic=lambda rows: float(rows[:, 0].mean() * rows[:, 1].mean()))
    assert r["n"] == 2
    assert r["a"] == pytest.approx(2.0 * 3.0) and r["b"] == pytest.approx(0.5 * 0.5)
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    assert paired_bootstrap(np.zeros(1), np.zeros(1))["p"] is None


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> running maximum 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.5, None, 0.01])   # None is no test: m = 2
    assert adjusted[1] is None and adjusted[0] == pytest.approx(0.5) and adjusted[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_verdicts():
    assert verdict(0.02, 0.01, higher_is_better=True) == "holds"
    assert verdict(0.02, 0.01, higher_is_better=False) == "does not hold"
    assert verdict(-0.02, 0.01, higher_is_better=False) == "holds"
    assert verdict(0.02, 0.2, higher_is_better=True) == "not significant"
    assert verdict(None, None, higher_is_better=True) == "not significant"
