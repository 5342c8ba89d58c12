"""The report's SoRA section: kept ranks as recorded, and the pruning verdict by its stated rule, on constructed
run records (the values below are chosen by hand so each verdict's side of the tolerance is known)."""
from qaa.experiments.claims import RATE_TOLERANCE
from qaa.experiments.report.sora import pruning_verdict, sora_lines, sora_runs


def _run(lr, factor, seed, val, ranks, r_max=8, task="e2e"):
    return {"task": task, "method": "sora", "lr": lr, "theta_lr_ratio": factor, "seed": seed, "status": "ok",
            "val_nll": val,
            "sora": {"xi": 3e-4 * factor, "xi_factor": factor, "r_max": r_max,
                     "ranks": {f"layer{i}": r for i, r in enumerate(ranks)}, "total_rank": sum(ranks),
                     "total_rank_max": r_max * len(ranks), "pruned_trainable_params": 100 * sum(ranks)}}


def _results(runs, chosen=(1e-3, 1.0)):
    return {"settings": {"selection_seed": 100, "seeds": [0, 1, 2]},
            "runs": {f"k{i}": r for i, r in enumerate(runs)},
            "selection": {"e2e|sora": {"status": "ok", "lr": chosen[0], "theta_lr_ratio": chosen[1]}}}


def test_no_threshold_pruned_more_than_the_release_value():
    sweep = [_run(1e-3, 1.0, 100, 2.0, [8, 7]), _run(1e-3, 10.0, 100, 2.01, [8, 7])]
    v = pruning_verdict(sweep, 1e-3)
    assert v["kind"] == "none_pruned" and v["run"] is None
    text = "\n".join(sora_lines(_results(sweep), "e2e"))
    assert "no threshold of the grid kept fewer ranks than the release's" in text


def test_the_comparison_is_at_the_chosen_rate_only():
    # at another rate an unpruned run is far worse and a pruned one better: neither may enter the verdict
    sweep = [_run(3e-3, 1.0, 100, 3.0, [8, 8]), _run(3e-3, 100.0, 100, 1.0, [1, 1]),
             _run(1e-3, 1.0, 100, 2.0, [8, 8])]
    assert pruning_verdict(sweep, 1e-3)["kind"] == "no_grid"
    assert pruning_verdict(sweep, 9e-3) is None


def test_pruning_within_tolerance_is_harmless_and_the_strongest_harmless_one_is_named():
    # reference 2.000 (factor 1, 16 ranks); factor 30: 2.000 + tol/2 keeping 9; factor 100: + tol keeping 3
    # (still harmless: "at most" the tolerance); factor 300: far worse keeping 0
    tol = RATE_TOLERANCE
    sweep = [_run(1e-3, 1.0, 100, 2.0, [8, 8]), _run(1e-3, 30.0, 100, 2.0 + tol / 2, [5, 4]),
             _run(1e-3, 100.0, 100, 2.0 + tol, [3, 0]), _run(1e-3, 300.0, 100, 2.5, [0, 0])]
    v = pruning_verdict(sweep, 1e-3)
    assert v["kind"] == "prunes_free"
    assert v["run"]["sora"]["xi_factor"] == 100.0
    assert abs(v["delta"] - tol) < 1e-12
    text = "\n".join(sora_lines(_results(sweep), "e2e"))
    assert "threshold factor 100 prunes without hurting: it keeps 3 of 16 ranks" in text
    assert "chose factor 1." in text


def test_pruning_beyond_tolerance_hurts_and_row_is_kept():
    sweep = [_run(1e-3, 1.0, 100, 2.0, [8, 8]), _run(1e-3, 100.0, 100, 2.0 + 3 * RATE_TOLERANCE, [3, 0]),
             _run(1e-3, 300.0, 100, 2.0 + 9 * RATE_TOLERANCE, [0, 0])]
    finals = [_run(1e-3, 1.0, s, 2.0, [8, 8]) for s in (0, 1, 2)]
    v = pruning_verdict(sweep, 1e-3)
    assert v["kind"] == "prunes_hurt" and v["run"]["sora"]["xi_factor"] == 100.0
    assert abs(v["delta"] - 3 * RATE_TOLERANCE) < 1e-12
    lines = sora_lines(_results(sweep + finals), "e2e")
    text = "\n".join(lines)
    assert "no threshold of the grid prunes without hurting" in text
    assert "SoRA's row is kept" in text
    # the pruning run's row: kept 3 of 16, one layer at rank 0, min / median / max 0 / 1.5 / 3, 300 parameters
    row = next(line for line in lines if line.startswith("| sweep") and "| 100 |" in line)
    assert "| 3 of 16 | 1 of 2 | 0 / 1.5 / 3 | 300 |" in row
    assert "seed 0: 16, seed 1: 16, seed 2: 16 of 16" in text


def test_sweep_rows_first_and_other_tasks_and_failures_ignored():
    runs = [_run(1e-3, 1.0, 0, 2.0, [8]), _run(3e-3, 1.0, 100, 2.1, [8]), _run(1e-3, 1.0, 100, 2.0, [8]),
            _run(1e-3, 1.0, 100, 2.0, [8], task="dart"), {**_run(1e-2, 1.0, 100, 2.0, [8]), "status": "failed"}]
    got = sora_runs(_results(runs), "e2e")
    assert [(r["seed"], r["lr"]) for r in got] == [(100, 1e-3), (100, 3e-3), (0, 1e-3)]
    assert sora_lines(_results([]), "e2e") == []
