"""Bootstrap intervals, paired differences and verdicts against hand computations."""
import numpy as np
import pytest

from qaa.experiments.metrics import bleu, bleu_from_stats, bleu_statistics
from qaa.experiments.stats import (Interval, MetricSpec, bootstrap, estimate, holm, mean_reduce, paired_difference,
                                   verdict)

MEAN = MetricSpec("m", "M", mean_reduce)


def test_two_inputs_give_the_hand_computed_interval():
    # One seed, inputs scoring 0 and 1: a replicate's mean is 0 (p=1/4), 0.5 (p=1/2) or 1 (p=1/4), so the 2.5%
    # and 97.5% quantiles of 2000 replicates are 0 and 1; the point estimate is 0.5.
    iv = bootstrap([[0.0, 1.0]], MEAN)
    assert (iv.value, iv.lo, iv.hi, iv.seed_sd) == (0.5, 0.0, 1.0, None)
    reps = np.random.default_rng(0)  # the frequencies the interval rests on, by hand: P(mean = 0) = 1/4
    draws = reps.integers(0, 2, size=(20000, 2)).mean(axis=1)
    assert abs((draws == 0).mean() - 0.25) < 0.01


def test_seeds_are_resampled_unless_asked_not_to():
    # One input, two seeds scoring 0 and 1: resampling seeds gives replicate means 0, 0.5, 1 -> [0, 1];
    # with the seeds kept, every replicate is 0.5.
    data = [[0.0], [1.0]]
    both = bootstrap(data, MEAN)
    assert (both.value, both.lo, both.hi) == (0.5, 0.0, 1.0)
    assert both.seed_sd == pytest.approx(np.std([0.0, 1.0], ddof=1))
    fixed = bootstrap(data, MEAN, resample_seeds=False)
    assert (fixed.lo, fixed.hi) == (0.5, 0.5)


def test_a_constant_shift_is_exactly_its_paired_difference():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 40))
    d = paired_difference(a + 0.25, a, MEAN)
    assert d.value == pytest.approx(0.25) and d.lo == pytest.approx(0.25) and d.hi == pytest.approx(0.25)
    assert d.excludes_zero()
    # unpaired, the same shift is lost in the spread of the inputs
    assert bootstrap(a + 0.25, MEAN).lo < bootstrap(a, MEAN).hi


def test_estimate_averages_seeds_and_reports_their_spread():
    value, sd = estimate([[1.0, 3.0], [3.0, 5.0]], MEAN)
    assert value == 3.0 and sd == pytest.approx(np.std([2.0, 4.0], ddof=1))


def test_bleu_from_per_input_statistics_is_corpus_bleu():
    hyps = ["the cat sat on the mat", "a dog barks loudly", "blue spice is a restaurant"]
    refs = [["the cat sat on a mat", "a cat is on the mat"], ["the dog barks"], ["blue spice is a pub", "x y"]]
    stats = bleu_statistics(hyps, refs)
    assert len(stats) == 3 and all(len(row) == 10 for row in stats)
    assert bleu_from_stats(stats) == pytest.approx(bleu(hyps, refs), abs=1e-9)
    assert bleu_from_stats(stats[:2]) == pytest.approx(bleu(hyps[:2], refs[:2]), abs=1e-9)


def test_verdicts_follow_the_interval_and_the_metric_direction():
    higher = MetricSpec("bleu", "BLEU", mean_reduce)
    lower = MetricSpec("nll", "NLL", mean_reduce, higher_is_better=False)
    checked = dict(seed_lo=0.2, seed_hi=1.8, p=0.001, p_adjusted=0.01)   # the other two checks pass
    # not significant: the resolution stated is the widest half-width, here the bootstrap's
    # (2.0 - -0.5) / 2 = 1.25 against the seed-level (1.8 - 0.2) / 2 = 0.80
    assert verdict("A", "B", higher, Interval(1.0, -0.5, 2.0, **checked)).endswith(
        "no significant difference; the widest interval's half-width is about ±1.25: a true difference of that "
        "size would be missed about half the time.")
    assert verdict("A", "B", higher, Interval(1.0, 0.5, 2.0, **checked)).endswith("A is better.")
    assert verdict("A", "B", lower, Interval(1.0, 0.5, 2.0, **checked)).endswith("B is better.")
    assert "[-0.500, +2.000]" in verdict("A", "B", lower, Interval(1.0, -0.5, 2.0), digits=3)


def test_seed_level_interval_is_the_hand_computed_t_interval():
    # Per-seed differences on all inputs: 1, 2, 4 (b is 0). Mean 7/3, sd sqrt(7/3). Student's t with 2 degrees
    # of freedom has CDF 1/2 + t / (2 sqrt(2 + t^2)), so its 0.975 quantile solves t / sqrt(2 + t^2) = 0.95:
    # t = sqrt(2 * 0.95^2 / (1 - 0.95^2)).
    a = [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    d = paired_difference(a, np.zeros((3, 2)), MEAN)
    t975 = np.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))
    half = t975 * np.sqrt(7 / 3) / np.sqrt(3)
    assert d.value == pytest.approx(7 / 3)
    assert (d.seed_lo, d.seed_hi) == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half))
    assert d.seed_diffs == (1.0, 2.0, 4.0)   # per seed, in the seeds' order
    # every replicate is positive: the bootstrap rejects 0 with p = 0, the seed level does not (lo < 0)
    assert d.p == 0.0 and d.excludes_zero() and d.seeds_exclude_zero() is False and not d.significant()
    # unequal seed counts: no pairing of seeds, no seed-level interval
    assert paired_difference(a, np.zeros((2, 2)), MEAN).seed_lo is None
    assert paired_difference(a, np.zeros((2, 2)), MEAN).seed_diffs is None


def test_bootstrap_p_value_by_hand():
    # One seed; differences 0 and 1 on two inputs: a replicate's mean difference is 0 with probability 1/4 and
    # positive otherwise, so p = 2 * min(P(rep <= 0), P(rep >= 0)) = 2 * 1/4 = 1/2.
    d = paired_difference([[0.0, 1.0]], [[0.0, 0.0]], MEAN)
    assert d.p == pytest.approx(0.5, abs=0.05) and not d.excludes_zero()


def test_holm_adjustment_by_hand():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])
    with pytest.raises(ValueError):
        holm([1.5])


def test_verdicts_need_every_check():
    higher = MetricSpec("bleu", "BLEU", mean_reduce)
    seeds_include_zero = Interval(1.0, 0.5, 2.0, seed_lo=-1.0, seed_hi=3.0, p=0.001, p_adjusted=0.01)
    text = verdict("A", "B", higher, seeds_include_zero)
    assert "seed-level [-1.00, +3.00]" in text and text.endswith(
        "no significant difference (the bootstrap interval excludes 0, but the seed-level interval includes 0).")
    holm_fails = Interval(1.0, 0.5, 2.0, seed_lo=0.2, seed_hi=1.8, p=0.01, p_adjusted=0.12)
    assert verdict("A", "B", higher, holm_fails).endswith("but the Holm-adjusted p is 0.120).")
    all_pass = Interval(1.0, 0.5, 2.0, seed_lo=0.2, seed_hi=1.8, p=0.001, p_adjusted=0.01)
    assert all_pass.significant() and verdict("A", "B", higher, all_pass).endswith("A is better.")
    # one seed: no seed-level interval, so never significant, whatever the bootstrap and the p-value say
    one_seed = Interval(1.0, 0.5, 2.0, p=0.001, p_adjusted=0.01)
    assert not one_seed.significant() and verdict("A", "B", higher, one_seed).endswith(
        "but there is no seed-level interval (it needs 2 or more seeds of both)).")
    no_p = Interval(1.0, 0.5, 2.0, seed_lo=0.2, seed_hi=1.8)
    assert not no_p.significant() and verdict("A", "B", higher, no_p).endswith("there is no p-value below 0.05).")


@pytest.mark.parametrize("bad", [[[1.0, float("nan")]], [[]], [1.0, 2.0]])
def test_malformed_data_is_refused(bad):
    with pytest.raises(ValueError):
        bootstrap(bad, MEAN)
    with pytest.raises(ValueError, match="same inputs"):
        paired_difference([[1.0, 2.0]], [[1.0]], MEAN)
