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


def _entries(areas_by_method):
    """Entries whose runs' curves are flat at the given value per seed (area = that value)."""
    out = {}
    for m, values in areas_by_method.items():
        runs = [{"seed": s, "val_curve": [[0, v], [4, v], [8, v]], "losses": [2.0] * 10} for s, v in enumerate(values)]
        out[m] = {"runs": runs, "evals": [{"nll": [v, v]} for v in values],
                  "selection": {"status": "ok", "swept": True,
                                "grid": [{"lr": 1e-3, "theta_lr_ratio": 1.0, "val_nll": 1.0, "status": "ok"}]}}
    return out


def test_convergence_verdicts_reject_only_when_the_interval_excludes_zero():
    from qaa.experiments.claims import convergence_lines

    # qaa minus lora per seed: -0.10, -0.11, -0.12 (tight): faster; qaa minus bias: -0.1, +0.1, 0.0: indistinguishable
    entries = _entries({"qaa": [1.0, 1.0, 1.0], "lora": [1.10, 1.11, 1.12], "bias": [1.1, 0.9, 1.0]})
    text = "\n".join(convergence_lines(entries, "qaa"))
    assert "Against LoRA r=8, QAA converges faster (lower area): -0.1100" in text
    assert "Against bias only (control), QAA is indistinguishable" in text
    assert "Target = 1.1100" in text   # the worst mean final value (LoRA's)
    slower = "\n".join(convergence_lines(_entries({"qaa": [1.2, 1.21, 1.22], "lora": [1.0, 1.0, 1.0]}), "qaa"))
    assert "QAA converges slower (higher area): +0.2100" in slower
    assert convergence_lines({"qaa": {"runs": [{"seed": 0}]}}, "qaa") == []


def test_seed_paired_p_by_hand():
    """Paired t test, 3 seeds (df 2), where the t CDF has the closed form F(t) = 1/2 + t / (2 sqrt(2 + t^2)):
    differences 1, 2, 3 give t = 2 / (1 / sqrt 3) = 2 sqrt 3 and p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(12/14)."""
    import math

    from qaa.experiments.claims import seed_paired_p

    p = seed_paired_p({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert p == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert seed_paired_p({0: 1.0}, {0: 0.0}) is None
    assert seed_paired_p({0: 1.0, 1: 1.0}, {0: 0.0, 1: 0.0}) == 0.0      # no spread, nonzero: certain
    assert seed_paired_p({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0}) == 1.0


def test_convergence_direction_needs_the_holm_adjusted_p():
    """Three comparisons whose intervals each exclude 0 (t = 6 with df 2: p = 1 - 6 / sqrt 38 = 0.0267 each) are
    not a direction once Holm adjusts them over the family (3 x 0.0267 = 0.080); one such comparison alone is."""
    import math

    from qaa.experiments.claims import claims_table_lines, convergence_lines
    from qaa.experiments.stats import MetricSpec, mean_reduce

    d = 0.1 * math.sqrt(3) / 6   # the spread that makes t = 6
    worse = [1.0 - 0.1 + d, 1.0 - 0.1, 1.0 - 0.1 - d]   # QAA - method = 0.1 - d, 0.1, 0.1 + d: QAA higher
    entries = _entries({"qaa": [1.0, 1.0, 1.0], "lora": worse, "prefix": worse, "sora": worse})
    text = "\n".join(convergence_lines(entries, "qaa"))
    adjusted = 3 * (1 - 6 / math.sqrt(38))
    assert adjusted == pytest.approx(0.0800, abs=1e-4)
    assert "Against LoRA r=8, QAA is indistinguishable (the interval excludes 0 but the Holm-adjusted p-value " \
           "is 0.08" in text
    assert not any(line.startswith("- Against") and "converges slower" in line for line in text.splitlines())
    spec = {"nll": MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False)}
    row = next(r for r in claims_table_lines({"e2e": entries}, {}, spec) if r.startswith("| faster convergence"))
    assert "slower in 0, indistinguishable in 3 of 3 comparisons" in row
    alone = "\n".join(convergence_lines(_entries({"qaa": [1.0, 1.0, 1.0], "lora": worse}), "qaa"))
    assert "Against LoRA r=8, QAA converges slower (higher area)" in alone
    # families: LoRA alone in its family is a direction again; prefix and SoRA share theirs (2 x 0.0267 > 0.05)
    split = "\n".join(convergence_lines(entries, "qaa", [["lora"], ["prefix", "sora"]]))
    assert "Against LoRA r=8, QAA converges slower (higher area)" in split
    assert "Against SoRA r_max=8, QAA is indistinguishable (the interval excludes 0 but the Holm-adjusted " \
           "p-value is 0.053" in split
    assert "its family (the comparison's declared methods" in split


def test_stability_table_counts():
    from qaa.experiments.claims import stability_lines

    entries = _entries({"qaa": [1.0, 1.2]})
    entries["qaa"]["runs"][0]["losses"] = [2.0] * 8 + [4.0]
    entries["qaa"]["selection"]["grid"].append({"lr": 3e-3, "theta_lr_ratio": 1.0, "val_nll": None, "status": "error"})
    row = [line for line in stability_lines(entries) if line.startswith("| QAA")][0]
    # span 1x (one good rate of 2 tried), seed sd of [1.0, 1.2] = 0.1414, 1 spike, 1 failed sweep run
    assert row == "| QAA | 1x (1 of 2 rates) | 0.1414 | 1 | 1 |"


def test_difference_of_differences_by_hand():
    import numpy as np

    from qaa.experiments.generalisation import difference_of_differences
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = MetricSpec("nll", "NLL", mean_reduce, higher_is_better=False)
    unseen = [False, False, True, True, True]
    # seed 0: a - b = 0.1 on seen inputs, 0.4 on unseen ones -> 0.3; seed 1: 0.2 and 0.3 -> 0.1
    b = np.array([[1.0, 2.0, 1.0, 2.0, 3.0], [1.5, 1.5, 1.5, 1.5, 1.5]])
    a = b + np.array([[0.1, 0.1, 0.4, 0.4, 0.4], [0.2, 0.2, 0.3, 0.3, 0.3]])
    d = difference_of_differences(a, b, unseen, spec, n_boot=500)
    assert d["value"] == pytest.approx(0.2) and d["per_seed"] == pytest.approx([0.3, 0.1])
    # the differences are constant within each group and seed, so inputs resampling moves nothing; seeds do
    assert 0.1 - 1e-9 <= d["lo"] <= d["value"] <= d["hi"] <= 0.3 + 1e-9
    half = 12.706204736174707 * np.std([0.3, 0.1], ddof=1) / np.sqrt(2)    # t(1, 0.975)
    assert d["seed_lo"] == pytest.approx(0.2 - half) and d["seed_hi"] == pytest.approx(0.2 + half)
    assert (d["n_unseen"], d["n_seen"]) == (3, 2)
    with pytest.raises(ValueError):
        difference_of_differences(a, b, [True] * 5, spec)


def test_claims_table_verdicts_from_constructed_results():
    import numpy as np

    from qaa.experiments.claims import claims_table_lines
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = {"nll": MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False)}
    # QAA converges faster than LoRA r=8 (lower area in every seed) but not than prefix (no difference)
    entries = _entries({"qaa": [1.0, 1.0, 1.0], "lora": [1.10, 1.11, 1.12], "prefix": [1.1, 0.9, 1.0]})
    table = "\n".join(claims_table_lines({"e2e": entries}, {}, spec))
    row = [r for r in table.splitlines() if r.startswith("| faster convergence")][0]
    assert "not faster: faster in 1, slower in 0, indistinguishable in 1 of 2 comparisons" in row
    assert "e2e: indistinguishable from prefix tuning (16 tokens) (" in row
    assert "e2e: faster than LoRA r=8 (-0.1100" in row
    assert "| stronger generalisation across tasks | held-out categories, several tasks | no data in this run |" \
        in table
    assert "| parameter efficiency and capacity |" in table and "not measured in this run" in table
    # generalisation: QAA's NLL gap to LoRA r=4 is 0.3 smaller on the unseen inputs in every seed -> stronger
    seen = [True, True, False, False]
    base = np.array([[1.0, 1.2, 1.4, 1.6], [1.1, 1.3, 1.5, 1.7], [0.9, 1.0, 1.2, 1.3]])
    shift = np.array([[0.0, 0.0, -0.3, -0.3], [0.0, 0.0, -0.31, -0.29], [0.0, 0.0, -0.3, -0.32]])
    gen = {"qaa": {"arrays": {"nll": base + shift}, "runs": [], "evals": []},
           "lora_r4": {"arrays": {"nll": base}, "runs": [], "evals": []}}
    table = "\n".join(claims_table_lines({"webnlg_unseen": gen}, {"webnlg_unseen": seen}, spec))
    row = [r for r in table.splitlines() if r.startswith("| stronger generalisation")][0]
    # per seed: -0.30, (-0.31 - 0.29) / 2 = -0.30, (-0.30 - 0.32) / 2 = -0.31 -> mean -0.3033
    assert "| stronger |" in row
    assert "webnlg_unseen held-out minus seen categories, vs LoRA r=4 (QAA's parameter count): -0.3033" in row
    # ... and the same data with the groups swapped is "weaker"
    table = "\n".join(claims_table_lines({"webnlg_unseen": gen}, {"webnlg_unseen": [not s for s in seen]}, spec))
    assert "| weaker |" in [r for r in table.splitlines() if r.startswith("| stronger generalisation")][0]


def test_variance_ratio_f_test_by_hand():
    from scipy.stats import f as f_dist

    from qaa.experiments.claims import variance_ratio_p

    # sd 0.0225 vs 0.0247 with 3 seeds each: F = 0.8298, df (2, 2): cdf = F / (1 + F) for (2, 2) df
    ratio = (0.0225 / 0.0247) ** 2
    assert f_dist.cdf(ratio, 2, 2) == pytest.approx(ratio / (1 + ratio))
    assert variance_ratio_p(0.0225, 3, 0.0247, 3) == pytest.approx(2 * ratio / (1 + ratio))
    assert variance_ratio_p(0.001, 3, 0.1, 3) < 0.05  # F = 1e-4: far below 1/39
    assert variance_ratio_p(0.02, 3, 0.02, 3) == 1.0


def test_stability_needs_a_measured_difference_in_seed_spread():
    from qaa.experiments.claims import claims_table_lines
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = {"nll": MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False)}
    grid = [{"lr": 1e-3, "theta_lr_ratio": 1.0, "val_nll": 1.50, "status": "ok"},
            {"lr": 3e-3, "theta_lr_ratio": 1.0, "val_nll": 1.51, "status": "ok"}]
    narrow = [{"lr": 1e-3, "theta_lr_ratio": 1.0, "val_nll": 1.50, "status": "ok"},
              {"lr": 3e-3, "theta_lr_ratio": 1.0, "val_nll": 1.60, "status": "ok"}]

    def entry(means, g, swept=True):
        return {"selection": {"status": "ok", "grid": g, "swept": swept}, "runs": [], "arrays": {},
                "evals": [{"nll": [m, m], "seed": i} for i, m in enumerate(means)]}

    # QAA's sd (0.01) below LoRA's (0.011) and a wider span: not a measured difference -> not shown
    per_task = {"e2e": {"qaa": entry([1.00, 1.01, 1.02], grid), "lora": entry([1.00, 1.011, 1.022], narrow)}}
    row = [r for r in "\n".join(claims_table_lines(per_task, {}, spec)).splitlines()
           if r.startswith("| more stable")][0]
    assert "| not shown |" in row and "F test p" in row
    # a hundredfold lower sd with the wider span: more stable
    per_task = {"e2e": {"qaa": entry([1.00, 1.0001, 1.0002], grid), "lora": entry([1.0, 1.01, 1.02], narrow)}}
    row = [r for r in "\n".join(claims_table_lines(per_task, {}, spec)).splitlines()
           if r.startswith("| more stable")][0]
    assert "| more stable |" in row and "good-rate span 3x vs 1x" in row
    # a rate given, not swept (one rate tried), measures no sensitivity: the span rule cannot be met
    per_task = {"e2e": {"qaa": entry([1.00, 1.0001, 1.0002], grid[:1], swept=False),
                        "lora": entry([1.0, 1.01, 1.02], narrow[:1], swept=False)}}
    row = [r for r in "\n".join(claims_table_lines(per_task, {}, spec)).splitlines()
           if r.startswith("| more stable")][0]
    assert "| not shown |" in row and "good-rate span not swept vs not swept" in row


def _two_task_gaps(gap_a, gap_b, noise=0.0):
    """Per-input NLL of QAA and a method on two tasks whose per-seed gaps (QAA − method) are given."""
    import numpy as np

    rng = np.random.default_rng(5)
    out = {}
    for task, gaps in (("e2e", gap_a), ("dart", gap_b)):
        method = rng.normal(1.5, 0.2, size=(len(gaps), 6))
        qaa = method + np.asarray(gaps)[:, None] + noise * rng.normal(size=method.shape)
        out[task] = {"qaa": {"arrays": {"nll": qaa}, "runs": [], "evals": []},
                     "lora_r4": {"arrays": {"nll": method}, "runs": [], "evals": []}}
    return out


def test_task_contrast_by_hand():
    import numpy as np

    from qaa.experiments.generalisation import task_contrast
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = MetricSpec("nll", "NLL", mean_reduce, higher_is_better=False)
    per_task = _two_task_gaps([0.1, 0.2, 0.3], [0.3, 0.3, 0.3])
    pairs = [(per_task[t]["qaa"]["arrays"]["nll"], per_task[t]["lora_r4"]["arrays"]["nll"]) for t in ("e2e", "dart")]
    macro = task_contrast(pairs, [0.5, 0.5], spec, n_boot=400)
    # gaps are constant over inputs: e2e 0.2 (seed mean), dart 0.3; per seed (0.1+0.3)/2, (0.2+0.3)/2, (0.3+0.3)/2
    assert macro["per_task"] == pytest.approx([0.2, 0.3]) and macro["value"] == pytest.approx(0.25)
    assert macro["per_seed"] == pytest.approx([0.2, 0.25, 0.3])
    half = 4.302652729911275 * np.std([0.2, 0.25, 0.3], ddof=1) / np.sqrt(3)    # t(2, 0.975)
    assert (macro["seed_lo"], macro["seed_hi"]) == pytest.approx((0.25 - half, 0.25 + half))
    # inputs resampling moves nothing; resampled seeds keep the e2e mean within [0.1, 0.3]
    assert 0.2 - 1e-9 <= macro["lo"] <= macro["value"] <= macro["hi"] <= 0.3 + 1e-9
    change = task_contrast(pairs, [-1.0, 1.0], spec, n_boot=400)
    assert change["value"] == pytest.approx(0.1) and change["per_seed"] == pytest.approx([0.2, 0.1, 0.0])
    with pytest.raises(ValueError, match="one weight per task"):
        task_contrast(pairs, [1.0], spec)
    with pytest.raises(ValueError, match="same inputs"):
        task_contrast([(pairs[0][0], pairs[0][1][:, :3])], [1.0], spec)


@pytest.mark.parametrize("gaps, verdict", [
    (([-0.10, -0.12, -0.11], [-0.05, -0.06, -0.04]), "stronger"),   # QAA better on both tasks, every seed
    (([0.10, 0.12, 0.11], [0.05, 0.06, 0.04]), "weaker"),
    (([-0.10, -0.12, -0.11], [0.10, 0.12, 0.11]), "not shown"),     # better on one task, worse on the other
])
def test_generalisation_row_across_tasks(gaps, verdict):
    from qaa.experiments.claims import claims_table_lines
    from qaa.experiments.generalisation import cross_task_lines
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = {"nll": MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False)}
    per_task = _two_task_gaps(*gaps)
    row = [r for r in claims_table_lines(per_task, {}, spec) if r.startswith("| stronger generalisation")][0]
    assert f"| {verdict} |" in row and "vs LoRA r=4 (QAA's parameter count): macro mean over e2e, dart" in row
    table = "\n".join(cross_task_lines(per_task, spec, 3))
    expected = (sum(gaps[0]) / 3 + sum(gaps[1]) / 3) / 2
    assert f"| LoRA r=4 (QAA's parameter count) | test NLL | e2e {sum(gaps[0]) / 3:+.3f}; dart " in table
    assert f"| {expected:+.3f} [" in table
    # a method without every planned seed on two tasks is left out of both
    assert cross_task_lines(per_task, spec, 4) == []
    assert "no data in this run" in "\n".join(claims_table_lines(per_task, {}, spec, n_seeds=4))


def _row(per_task, seen=None, n_seeds=3):
    from qaa.experiments.claims import claims_table_lines
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = {"nll": MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False)}
    return [r for r in claims_table_lines(per_task, seen or {}, spec, n_seeds=n_seeds)
            if r.startswith("| stronger generalisation")][0]


def test_an_average_cannot_hide_a_task_where_qaa_is_worse():
    # e2e: QAA better by 0.5 in every seed; dart: worse by 0.1 in every seed (significant on its own): the macro
    # mean (-0.2) is below 0 with both intervals, but the row must not say "stronger"
    per_task = _two_task_gaps([-0.50, -0.52, -0.49], [0.10, 0.09, 0.11])
    row = _row(per_task)
    assert "| not shown |" in row and "gaps e2e -0.5033, dart +0.1000" in row


def test_a_bootstrap_interval_alone_is_not_enough():
    # the per-seed macro gaps -0.29, +0.015, -0.055 spread so widely that 3 seeds' t interval includes 0
    per_task = _two_task_gaps([-0.30, 0.02, -0.05], [-0.28, 0.01, -0.06])
    assert "| not shown |" in _row(per_task)


def test_controls_and_incomplete_seeds_do_not_make_a_generalisation_verdict():
    import numpy as np

    per_task = _two_task_gaps([-0.10, -0.12, -0.11], [-0.05, -0.06, -0.04])
    for entries in per_task.values():           # the same data under the bias-only control's name
        entries["bias"] = entries.pop("lora_r4")
    assert "| no data in this run |" in _row(per_task)
    # held-out categories with 2 of the 3 planned seeds: left out
    seen = [True, True, False, False]
    base = np.array([[1.0, 1.2, 1.4, 1.6], [1.1, 1.3, 1.5, 1.7]])
    gen = {"qaa": {"arrays": {"nll": base + np.array([0, 0, -0.3, -0.3])}, "runs": [], "evals": []},
           "lora_r4": {"arrays": {"nll": base}, "runs": [], "evals": []}}
    assert "| no data in this run |" in _row({"webnlg_unseen": gen}, {"webnlg_unseen": seen})
    # ... and the same data count when 2 seeds were planned (every seed 0.3 better on held-out categories)
    assert "| stronger |" in _row({"webnlg_unseen": gen}, {"webnlg_unseen": seen}, n_seeds=2)


def test_bad_bootstrap_arguments_and_non_finite_data_are_refused():
    import numpy as np

    from qaa.experiments.capacity import budget_interaction
    from qaa.experiments.generalisation import difference_of_differences, task_contrast
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = MetricSpec("nll", "NLL", mean_reduce, higher_is_better=False)
    a = np.ones((2, 4))
    with pytest.raises(ValueError, match="n_boot"):
        task_contrast([(a, a)], [1.0], spec, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        difference_of_differences(a, a, [True, True, False, False], spec, level=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        budget_interaction(a, a, a, a, spec, n_boot=10)
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        difference_of_differences(bad, a, [True, True, False, False], spec)


def test_claims_rows_leave_out_a_method_with_fewer_seeds_than_planned():
    """A baseline still running (2 of 3 planned seeds) enters neither the convergence nor the stability verdict,
    as it enters no difference table; with every seed it does."""
    from qaa.experiments.claims import claims_table_lines
    from qaa.experiments.stats import MetricSpec, mean_reduce

    spec = {"nll": MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False)}
    entries = _entries({"qaa": [1.0, 1.0, 1.0], "lora": [1.10, 1.11, 1.12], "prefix": [1.3, 1.31]})
    rows = claims_table_lines({"e2e": entries}, {}, spec, n_seeds=3)
    conv = next(r for r in rows if r.startswith("| faster convergence"))
    stab = next(r for r in rows if r.startswith("| more stable"))
    assert "faster in every comparison" in conv and "e2e: faster than LoRA r=8" in conv
    assert "prefix tuning (16 tokens)" not in conv and "prefix tuning (16 tokens)" not in stab
    assert "LoRA r=8" in stab
    rows = claims_table_lines({"e2e": entries}, {}, spec, n_seeds=2)
    conv = next(r for r in rows if r.startswith("| faster convergence"))
    assert "e2e: faster than prefix tuning (16 tokens)" in conv
