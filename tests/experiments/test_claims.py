"""The convergence and stability numbers against hand-computed cases."""
import math

import pytest

from qaa.experiments.claims import (common_target, curve_area, loss_spikes, rate_sensitivity, seed_paired_interval,
                                    steps_to_target)


def test_curve_area_is_the_mean_nll_over_training():
    # trapezoids: (4-0)*(3+2)/2 = 10, (8-4)*(2+1)/2 = 6 -> 16 / 8 = 2.0
    assert curve_area([[0, 3.0], [4, 2.0], [8, 1.0]]) == pytest.approx(2.0)
    # uneven checkpoints: (2-0)*(4+2)/2 = 6, (8-2)*(2+2)/2 = 12 -> 18 / 8
    assert curve_area([[0, 4.0], [2, 2.0], [8, 2.0]]) == pytest.approx(18 / 8)
    assert curve_area([[0, 3.0], [4, math.nan]]) == math.inf
    with pytest.raises(ValueError):
        curve_area([[0, 1.0]])
    with pytest.raises(ValueError):
        curve_area([[0, 1.0], [0, 2.0]])


def test_steps_to_target_interpolates_the_first_crossing():
    curve = [[0, 3.0], [4, 2.0], [8, 1.0], [12, 1.5], [16, 0.5]]
    assert steps_to_target(curve, 1.5) == pytest.approx(6.0)      # 2.0 at 4, 1.0 at 8: halfway
    assert steps_to_target(curve, 2.0) == pytest.approx(4.0)
    assert steps_to_target(curve, 3.5) == 0.0
    assert steps_to_target(curve, 0.75) == pytest.approx(15.0)     # after the bump: 12 + 4 * (1.5 - 0.75) / (1.5 - 0.5)
    assert steps_to_target(curve, 0.1) is None
    with pytest.raises(ValueError):
        steps_to_target(curve, math.inf)


def test_common_target_is_the_worst_mean_final_value():
    assert common_target({"a": [1.0, 1.2], "b": [1.5, 1.3], "c": [0.9]}) == pytest.approx(1.4)
    with pytest.raises(ValueError):
        common_target({"a": [math.nan]})


def test_seed_paired_interval_by_hand():
    a, b = {0: 1.0, 1: 2.0, 2: 3.0, 5: 9.0}, {0: 0.5, 1: 1.0, 2: 2.0}
    mean, lo, hi, n = seed_paired_interval(a, b)
    # differences 0.5, 1.0, 1.0: mean 5/6, sd sqrt(1/12), t(2, 0.975) = 4.302652729911275
    half = 4.302652729911275 * math.sqrt(1 / 12) / math.sqrt(3)
    assert n == 3 and mean == pytest.approx(5 / 6) and lo == pytest.approx(5 / 6 - half) and hi == pytest.approx(5 / 6 + half)
    assert seed_paired_interval({0: 1.0}, {0: 2.0}) is None


def test_loss_spikes():
    losses = [2.0] * 8 + [3.5, 2.0, 2.9, 3.1, math.inf]
    # step 8: 3.5 > 1.5 * 2.0; step 10: 2.9 <= 3.0; step 11: 3.1 > 1.5 * median(steps 3..10) = 3.0; 12: inf
    assert loss_spikes(losses) == [8, 11, 12]
    assert loss_spikes([5.0, 1.0, 9.0]) == []   # too few predecessors to judge
    with pytest.raises(ValueError):
        loss_spikes(losses, factor=1.0)


def test_rate_sensitivity():
    grid = [{"lr": 1e-3, "theta_lr_ratio": 1.0, "val_nll": 1.50}, {"lr": 3e-3, "theta_lr_ratio": 1.0, "val_nll": 1.40},
            {"lr": 1e-2, "theta_lr_ratio": 1.0, "val_nll": 1.415}, {"lr": 3e-2, "theta_lr_ratio": 1.0, "val_nll": None},
            {"lr": 3e-3, "theta_lr_ratio": 10.0, "val_nll": 1.0}]
    r = rate_sensitivity(grid)
    assert r["best_lr"] == 3e-3 and r["good"] == [3e-3, 1e-2] and r["span"] == pytest.approx(10 / 3)
    assert r["tried"] == 4 and r["failed"] == 1
    assert rate_sensitivity([{"lr": 1e-3, "val_nll": None}]) is None
