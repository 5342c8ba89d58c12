"""Parameter efficiency and capacity: the Pareto front against constructed points, the budget interaction
against a hand computation, the quality-per-parameter report lines and the budget command."""
import json
import math

import numpy as np
from scipy import stats
import pytest

from qaa.experiments.capacity import (budget_interaction, budget_lines, late_fall, main, pareto_front,
                                     quality_per_parameter_lines)
from qaa.experiments.stats import MetricSpec, mean_reduce

NLL = MetricSpec("nll", "test NLL", mean_reduce, higher_is_better=False)


def test_pareto_front_of_constructed_points():
    pts = [("a", 10, 2.0), ("b", 100, 1.5), ("c", 1000, 1.6),   # c: more parameters and worse than b
           ("d", 100, 1.7),                                       # d: as many parameters as b, worse
           ("e", 5000, 1.2), ("f", 10, 2.0)]                      # f equals a: both stay
    assert pareto_front(pts) == ["a", "f", "b", "e"]
    # higher is better (BLEU): the order of dominance flips on the value axis
    assert pareto_front([("x", 1, 30.0), ("y", 2, 35.0), ("z", 3, 33.0)], lower_is_better=False) == ["x", "y"]
    assert pareto_front([("x", 1, 30.0), ("y", 2, 35.0), ("z", 3, 33.0)]) == ["x"]
    assert pareto_front([]) == []
    with pytest.raises(ValueError, match="unique"):
        pareto_front([("a", 1, 1.0), ("a", 2, 0.5)])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([("a", -1, 1.0)])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([("a", 1, float("nan"))])


def test_budget_interaction_by_hand():
    rng = np.random.default_rng(0)
    b_short = rng.normal(1.8, 0.1, size=(3, 5))
    b_long = rng.normal(1.5, 0.1, size=(3, 5))
    # gaps constant over inputs: short +0.10, +0.12, +0.14 per seed; long +0.02, +0.05, +0.02
    a_short = b_short + np.array([0.10, 0.12, 0.14])[:, None]
    a_long = b_long + np.array([0.02, 0.05, 0.02])[:, None]
    d = budget_interaction(a_short, b_short, a_long, b_long, NLL, n_boot=500)
    per_seed = [0.02 - 0.10, 0.05 - 0.12, 0.02 - 0.14]
    assert d["per_seed"] == pytest.approx(per_seed) and d["value"] == pytest.approx(np.mean(per_seed))
    assert d["short"] == pytest.approx(0.12) and d["long"] == pytest.approx(0.03)
    half = 4.302652729911275 * np.std(per_seed, ddof=1) / np.sqrt(3)
    assert (d["seed_lo"], d["seed_hi"]) == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half))
    # shared seed draws: a replicate is the mean of 3 drawn per-seed values, so within [min, max] of them
    assert min(per_seed) - 1e-12 <= d["lo"] <= d["value"] <= d["hi"] <= max(per_seed) + 1e-12
    with pytest.raises(ValueError, match="same inputs"):
        budget_interaction(a_short, b_short, a_long[:, :4], b_long[:, :4], NLL)


def _entries(sizes):
    """Per method: runs with a trainable count and per-input NLL of 3 seeds around a given mean."""
    out = {}
    for i, (method, params, mean) in enumerate(sizes):
        nll = np.full((3, 6), mean) + 0.001 * np.arange(6)[None, :] + 0.002 * np.arange(3)[:, None]
        runs = [{"seed": s, "trainable_params": params} for s in range(3)]
        if method == "sora":
            for r in runs:
                r["sora"] = {"pruned_trainable_params": params // 2}
        out[method] = {"arrays": {"nll": nll}, "runs": runs, "evals": [{"seed": s} for s in range(3)]}
    return out


def test_quality_per_parameter_lines_name_the_front():
    entries = _entries([("qaa", 1000, 1.60), ("lora_r1", 500, 1.70), ("lora_r4", 2000, 1.55), ("sora", 4000, 1.58),
                        ("qaa_probs", 90000, 1.59)])
    text = "\n".join(quality_per_parameter_lines(entries, {"nll": NLL}, 3))
    # SoRA counts its pruned size (2000, as many as LoRA r=4, and worse): off the front; QAA probs: off
    assert "| SoRA r_max=8 | 2,000 |" in text
    assert "Front in test NLL: LoRA r=1, QAA, LoRA r=4 (QAA's parameter count). QAA configurations on it: QAA." in text
    assert quality_per_parameter_lines(entries, {"nll": NLL}, 4) == []   # no method has 4 seeds
    from qaa.experiments.claims import claims_table_lines

    row = [r for r in claims_table_lines({"e2e": entries}, {}, {"nll": NLL}) if r.startswith("| parameter eff")][0]
    assert "| on the front |" in row and "e2e (5 trained configurations): front LoRA r=1, QAA" in row
    worse = _entries([("qaa", 1000, 1.80), ("lora_r1", 500, 1.70), ("lora_r4", 2000, 1.55), ("bias", 100, 1.9)])
    row = [r for r in claims_table_lines({"e2e": worse}, {}, {"nll": NLL}) if r.startswith("| parameter eff")][0]
    assert "| not on the front |" in row


def _results(steps, gap, seeds=(0, 1, 2), split_seed=1):
    rng = np.random.default_rng(steps)
    lora = rng.normal(1.6, 0.1, size=(len(seeds), 6))
    arrays = {"qaa": lora + gap, "lora_r4": lora}
    selection, evals, runs = {}, {}, {}
    for method, nll in arrays.items():
        selection[f"e2e|{method}"] = {"status": "ok", "lr": 0.01, "theta_lr_ratio": 1.0}
        for i, s in enumerate(seeds):
            key = f"e2e|{method}|lr=0.01|ratio=1|seed={s}"
            evals[key] = {"status": "ok", "task": "e2e", "method": method, "lr": 0.01, "theta_lr_ratio": 1.0,
                          "seed": s, "nll": nll[i].tolist(), "scores": {}}
            runs[key] = {"status": "ok", "seed": s, "losses": [2.0] * (steps - 1) + [1.0 + 0.1 * i]}
    return {"settings": {"model": "m", "split_seed": split_seed, "val_fraction": 0.1, "test_fraction": 0.2,
                         "batch_size": 4, "steps": steps, "tasks": ["e2e"], "seeds": list(seeds)},
            "selection": selection, "evals": evals, "runs": runs}


def test_budget_command_writes_the_table(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    for folder, res in ((short, _results(32, 0.05)), (long, _results(128, -0.05))):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(res))
    assert main([str(short), str(long)]) == 0
    md = (long / "budget.md").read_text()
    # the gap goes from +0.05 to -0.05 on every input and seed: change -0.100, towards QAA
    row = [r for r in md.splitlines() if r.startswith("| LoRA r=4")][0]
    assert "| +0.050 | -0.050 | -0.100 [-0.100, -0.100; seed-level [-0.100, -0.100]] | the gap moves towards QAA |" in row
    # still falling at 128 steps: per seed, mean of steps 51-63 (2.0) minus mean of the last 13 steps
    # ((12 x 2.0 + 1.0 + 0.1 i) / 13); three seeds, t interval with 2 degrees of freedom
    fall = np.array([2.0 - (24.0 + 1.0 + 0.1 * i) / 13 for i in range(3)])
    half = stats.t.ppf(0.975, 2) * fall.std(ddof=1) / np.sqrt(3)
    assert (f"| {fall.mean():+.3f} [{fall.mean() - half:+.3f}, {fall.mean() + half:+.3f}] yes | +0.050 |") in row
    # final training loss: last 10% of the steps (3 of 32: 2, 2, 1.0 + 0.1 i), seeds averaged
    assert row.startswith(f"| LoRA r=4 (QAA's parameter count) | {np.mean([(4 + 1.0 + 0.1 * i) / 3 for i in range(3)]):.3f} |")
    with pytest.raises(ValueError, match="split_seed"):
        budget_lines(_results(32, 0.0), _results(128, 0.0, split_seed=2))
    assert main([str(short)]) == 2 and main([str(short), str(tmp_path / "nope")]) == 2


def test_curve_turn_and_the_small_pool_table():
    from qaa.experiments.capacity import capacity_lines, curve_turn

    turn = curve_turn([[0, 2.0], [4, 1.5], [8, 1.4], [12, 1.45], [16, 1.6]])
    assert turn == {"best_step": 8.0, "best": 1.4, "final": 1.6, "rise": pytest.approx(0.2)}
    assert curve_turn([[0, 2.0], [4, 1.0], [8, 1.0]])["best_step"] == 4.0   # the first step of the minimum
    assert curve_turn([[0, 2.0], [4, 1.0]])["rise"] == 0.0
    with pytest.raises(ValueError):
        curve_turn([])
    entries = {"qaa": {"runs": [{"val_curve": [[0, 2.0], [8, 1.4], [16, 1.6]], "losses": [2.0] * 9 + [1.0]},
                                {"val_curve": [[0, 2.0], [8, 1.5], [16, 1.5]], "losses": [2.0] * 9 + [0.8]}]},
               "base": {"runs": []}}
    text = "\n".join(capacity_lines(entries, 8))
    # means over the two seeds: final loss 0.9, lowest 1.45 at step 8, final 1.55, rise 0.1
    assert "| QAA | 2 | 0.900 | 1.4500 | 8 | 1.5500 | +0.1000 |" in text and "8 training inputs" in text
    assert capacity_lines({"qaa": {"runs": [{"losses": [1.0]}]}}, 8) == []


def test_small_pool_differences_pair_seeds_with_a_hand_computed_t_interval():
    from qaa.experiments.capacity import capacity_difference_lines
    from qaa.experiments.claims import seed_paired_interval

    def run(seed, loss, best):
        return {"seed": seed, "losses": [3.0] * 9 + [loss], "val_curve": [[0, 2.0], [8, best], [16, best + 0.1]]}

    # paired by seed (listed in another order, with an unpaired seed 7 first, so pairing by position would
    # misalign): QAA minus LoRA losses 1.3-1.0, 1.7-1.2, 1.6-1.2 = 0.3, 0.5, 0.4 (mean 0.4, sd 0.1); lowest
    # validation NLL 1.5-1.5, 1.6-1.5, 1.4-1.5 = 0.0, 0.1, -0.1 (mean 0, sd 0.1)
    entries = {"qaa": {"runs": [run(0, 1.3, 1.5), run(1, 1.7, 1.6), run(2, 1.6, 1.4)]},
               "lora_r4": {"runs": [run(7, 0.1, 0.1), run(2, 1.2, 1.5), run(0, 1.0, 1.5), run(1, 1.2, 1.5)]},
               "bias": {"runs": [run(0, 1.0, 1.0)]}, "base": {"runs": []}}
    half = 4.302652729911275 * 0.1 / math.sqrt(3)   # t(2, 0.975) * sd / sqrt(n)
    mean, lo, hi, n = seed_paired_interval({0: 0.3, 1: 0.5, 2: 0.4}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert (mean, lo, hi, n) == (pytest.approx(0.4), pytest.approx(0.4 - half), pytest.approx(0.4 + half), 3)
    text = "\n".join(capacity_difference_lines(entries))
    row = [r for r in text.splitlines() if r.startswith("| LoRA r=4")][0]
    assert f"| 3 | +0.400 [{0.4 - half:+.3f}, {0.4 + half:+.3f}] (higher for QAA) |" in row
    # lowest and final validation NLL (the curve's last point is lowest + 0.1 for every run): both differences
    # are 0.0, 0.1, -0.1; the rise is 0.1 for every run, so its difference is 0 with a zero-width interval
    assert row.count(f"{0.0:+.3f} [{-half:+.3f}, {half:+.3f}] (not resolved) |") == 2
    assert row.endswith("| +0.000 [+0.000, +0.000] (not resolved) |")
    assert "bias" not in text.lower()   # one shared seed: no interval
    assert seed_paired_interval({0: 1.0}, {0: 0.0}) is None   # one seed: no interval


def test_a_training_cap_keeps_the_first_inputs_with_every_reference():
    from qaa.experiments.data import Example
    from qaa.experiments.tasks import TaskSplits

    train = [Example("a", ("1", "2")), Example("b", ("3",)), Example("a", ("4",)), Example("c", ("5",))]
    capped = TaskSplits(train, [Example("v", ("6",))], [Example("t", ("7",))]).capped(train_size=2)
    assert [(e.input, e.references) for e in capped.train] == [("a", ("1", "2")), ("b", ("3",)), ("a", ("4",))]
    assert len(capped.val) == len(capped.test) == 1
    assert TaskSplits(train, [], []).capped().train == train


def test_the_capacity_preset_and_train_size_option():
    from qaa.experiments.settings import resolve_settings
    from support import compare_args

    s = resolve_settings(compare_args(preset="cpu_capacity"))
    assert s.train_size == 8 and s.steps == 132 and not s.select_lr and s.curve_points == 16
    assert resolve_settings(compare_args(preset="cpu")).train_size is None
    assert resolve_settings(compare_args(preset="cpu", train_size=64)).train_size == 64
    with pytest.raises(ValueError, match="--train-size"):
        resolve_settings(compare_args(preset="cpu", train_size=0))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_a_small_pool_comparison_trains_on_the_cap_and_reports_it(tiny_model_dir, fake_tasks, tmp_path):
    from qaa.experiments.compare import run_compare
    from support import compare_args

    results = run_compare(compare_args(model=str(tiny_model_dir), tasks="e2e", methods="qaa", steps=2, batch_size=2,
                                       eval_size=2, max_new_tokens=4, no_bertscore=True, out=str(tmp_path),
                                       seeds="0", select_lr=False, train_size=2))
    info = results["tasks"]["e2e"]
    assert info["train_inputs"] == 2 and info["train_size"] == 2 and results["settings"]["train_size"] == 2
    assert "**Capacity on a small pool** (2 training inputs" in (tmp_path / "results.md").read_text()


def test_the_base_model_anchors_the_front():
    entries = _entries([("qaa", 96, 9.0), ("lora_r1", 500, 1.70), ("lora_r4", 2000, 1.55), ("prefix", 4000, 1.6)])
    entries["base"] = {"arrays": {"nll": np.full((1, 6), 3.0)}, "runs": [], "evals": [{}]}
    text = "\n".join(quality_per_parameter_lines(entries, {"nll": NLL}, 3))
    # QAA (NLL 9, worse than no adaptation at 0 parameters) is dominated by the untuned model
    assert "Front in test NLL: untuned base model, LoRA r=1, LoRA r=4 (QAA's parameter count). No QAA" in text
    assert "| untuned base model | 0 |" in text
    from qaa.experiments.claims import claims_table_lines

    row = [r for r in claims_table_lines({"e2e": entries}, {}, {"nll": NLL}) if r.startswith("| parameter eff")][0]
    assert "| not on the front |" in row and "e2e (4 trained configurations and the untuned model): front" in row


def test_budget_lines_refuse_what_is_not_comparable_and_say_how_rates_were_set(tmp_path):
    short, long = _results(32, 0.05), _results(128, 0.05)
    with pytest.raises(ValueError, match="must be longer"):
        budget_lines(long, short)                                    # swapped
    other = _results(128, 0.05)
    other["settings"]["train_size"] = 8
    with pytest.raises(ValueError, match="train_size"):
        budget_lines(short, other)
    other = _results(128, 0.05)
    other["settings"]["eval_size"] = {"e2e": 20}
    short["settings"]["eval_size"] = {"e2e": 50}
    with pytest.raises(ValueError, match="eval_size on e2e"):
        budget_lines(short, other)
    short, long = _results(32, 0.05), _results(128, 0.05)
    long["settings"]["lr_from"] = "earlier/results.json"
    short["settings"]["select_lr"] = True
    text = "\n".join(budget_lines(short, long))
    assert "(rates chosen on validation at that budget)" in text and "(rates read from an earlier" in text
    # the gap does not move (+0.05 at both budgets): no measured change
    assert "| no measured change |" in text
    # a centred long budget filled by one process per method: the folder's settings are the first process's
    # (LoRA's, no ratio), the carried angle-rate ratio is read from QAA's selection record
    long = _results(128, 0.05)
    long["settings"].update(select_lr=True, lr_grid_from="short/results.json", lr_centre={"lora_r4": 0.01},
                            lr_centre_ratio={})
    long["selection"]["e2e|qaa"].update(grid_centre=0.01, ratio_carried=True)
    text = "\n".join(budget_lines(short, long))
    assert ("around the rates c of short/results.json, widened at an edge; angle-rate ratios carried from that "
            "file, not swept again (QAA)") in text
    with pytest.raises(ValueError, match="not a qaa compare results.json"):
        budget_lines([], long)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "results.json").write_text("[]")
    (tmp_path / "b" / "results.json").write_text(json.dumps(long))
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2


def test_a_diverged_curve_is_counted_not_fatal():
    from qaa.experiments.capacity import capacity_lines, curve_turn

    entries = {"qaa": {"runs": [{"val_curve": [[0, 2.0], [8, 1.4], [16, 1.6]], "losses": [1.0]},
                                {"val_curve": [[0, 2.0], [8, float("inf")], [16, float("nan")]], "losses": [1.0]}]}}
    assert "| QAA | 1 (1 diverged) | 1.000 | 1.4000 | 8 | 1.6000 | +0.2000 |" in "\n".join(capacity_lines(entries, 8))
    with pytest.raises(ValueError, match="increase"):
        curve_turn([[16, 1.0], [0, 2.0]])


def test_a_control_on_the_front_is_not_a_qaa_configuration():
    """The frozen-angle control (its name starts with "qaa") on the front, QAA itself off it: neither the table's
    line nor the claims row may call QAA on the front."""
    from qaa.experiments.claims import claims_table_lines

    entries = _entries([("qaa", 1000, 1.60), ("qaa_frozen_theta", 900, 1.58), ("lora_r4", 2000, 1.55),
                        ("bias", 100, 1.9)])
    text = "\n".join(quality_per_parameter_lines(entries, {"nll": NLL}, 3))
    assert "Front in test NLL: bias only (control), QAA with frozen angles (control), LoRA r=4" in text
    assert "No QAA configuration is on it." in text
    row = [r for r in claims_table_lines({"e2e": entries}, {}, {"nll": NLL}) if r.startswith("| parameter eff")][0]
    assert "| not on the front |" in row
    # a QAA variant in the same place is a configuration, and counts
    entries = _entries([("qaa", 1000, 1.60), ("qaa_l1", 900, 1.58), ("lora_r4", 2000, 1.55), ("bias", 100, 1.9)])
    row = [r for r in claims_table_lines({"e2e": entries}, {}, {"nll": NLL}) if r.startswith("| parameter eff")][0]
    assert "| on the front |" in row


def test_late_fall_by_hand():
    # 20 steps: windows of 2 steps, steps 8-9 before the midpoint and 18-19 at the end
    def entry(tails):
        return {"runs": [{"seed": s, "losses": [1.0] * 8 + [a, a] + [1.0] * 8 + [b, b]} for s, (a, b) in tails.items()]}
    m, lo, hi, n = late_fall(entry({0: (2.0, 1.0), 1: (2.2, 1.0), 2: (1.8, 1.0)}))
    half = stats.t.ppf(0.975, 2) * np.std([1.0, 1.2, 0.8], ddof=1) / np.sqrt(3)
    assert n == 3 and m == pytest.approx(1.0) and (lo, hi) == pytest.approx((1.0 - half, 1.0 + half))
    m, lo, hi, _ = late_fall(entry({0: (1.0, 2.0), 1: (1.0, 2.1), 2: (1.0, 1.9)}))
    assert hi < 0 and m == pytest.approx(-1.0)                      # rising
    assert late_fall(entry({0: (2.0, 1.0)})) is None                # one seed: no spread
    assert late_fall({"runs": [{"seed": s, "losses": [1.0, 1.0, 1.0]} for s in range(3)]}) is None
