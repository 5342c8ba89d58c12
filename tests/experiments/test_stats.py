"""Bootstrap intervals, paired differences and verdicts against hand computations."""
import numpy as np
import pytest

from qaa.experiments.metrics import bleu, bleu_from_stats, bleu_statistics
from qaa.experiments.stats import Interval, MetricSpec, bootstrap, estimate, mean_reduce, paired_difference, verdict

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
    assert verdict("A", "B", higher, Interval(1.0, -0.5, 2.0)).endswith("no significant difference.")
    assert verdict("A", "B", higher, Interval(1.0, 0.5, 2.0)).endswith("A is better.")
    assert verdict("A", "B", lower, Interval(1.0, 0.5, 2.0)).endswith("B is better.")
    assert "[-0.500, +2.000]" in verdict("A", "B", lower, Interval(1.0, -0.5, 2.0), digits=3)


@pytest.mark.parametrize("bad", [[[1.0, float("nan")]], [[]], [1.0, 2.0]])
def test_malformed_data_is_refused(bad):
    with pytest.raises(ValueError):
        bootstrap(bad, MEAN)
    with pytest.raises(ValueError, match="same inputs"):
        paired_difference([[1.0, 2.0]], [[1.0]], MEAN)
