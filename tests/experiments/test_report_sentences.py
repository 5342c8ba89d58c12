"""Every conditional sentence of ``results.md`` appears exactly where the run's record makes it true.

Reports are built from recorded runs (results dicts shaped as :func:`qaa.experiments.compare.run_compare` writes
them, with constructed per-input NLLs) of each kind: rates swept, given by ``--lr``, read by ``--lr-from`` or left
at their defaults; 2 or 3 seeds; the sweep's seed among the final seeds or apart; test inputs that overlap the
inputs QAA's defaults were judged on or fresh ones; a start-of-run load above or within the run's threads.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from qaa.experiments import report
from qaa.experiments.provenance import QAA_DEFAULTS, canonical_input, defaults_overlap
from qaa.experiments.stats import format_p, seed_level_factor

#: Two of the MRs QAA's defaults were judged on, in the E2E CSV form (the record holds the GEM form).
JUDGED = ["name[Cocum], eatType[coffee shop], near[The Rice Boat]",
          "name[Strada], eatType[coffee shop], area[city centre]"]
#: MRs that are not among them.
FRESH = [f"name[Place {i}], eatType[pub], area[riverside]" for i in range(8)]


def _record(kind: str, seeds, overlap: bool, selection_seed: int = 100, load_start=(0.4, 0.3, 0.2),
            threads: int = 1, lr_from: str = "earlier/results.json") -> dict:
    """A two-method (QAA, LoRA) results dict on task e2e with 8 test inputs."""
    texts = (JUDGED + FRESH[:6]) if overlap else FRESH
    rng = np.random.default_rng(len(seeds))
    qaa = rng.normal(1.5, 0.05, size=(len(seeds), 8))
    arrays = {"qaa": qaa, "lora": qaa + 0.5}  # LoRA worse by 0.5 nats on every input and seed: p = 0
    selection, evals = {}, {}
    for method, nll in arrays.items():
        lr = 0.01 if method == "qaa" else 0.009
        selection[f"e2e|{method}"] = {
            "status": "ok", "lr": lr, "theta_lr_ratio": 1.0, "seed": selection_seed,
            "swept": kind == "swept", "given": kind in ("--lr", "--lr-from"),
            "given_by": kind if kind in ("--lr", "--lr-from") else None,
            "grid": [{"lr": lr, "theta_lr_ratio": 1.0, "val_nll": 1.4, "status": "ok"}]}
        for i, seed in enumerate(seeds):
            evals[f"e2e|{method}|lr={lr:.6g}|ratio=1|seed={seed}"] = {
                "status": "ok", "task": "e2e", "method": method, "lr": lr, "theta_lr_ratio": 1.0, "seed": seed,
                "nll": nll[i].tolist(), "scores": {}}
    return {"settings": {"tasks": ["e2e"], "seeds": list(seeds), "selection_seed": selection_seed,
                         "steps": 32, "batch_size": 4, "split_seed": 1, "threads": threads, "preset": "cpu",
                         "lr_from": lr_from if kind == "--lr-from" else None},
            "machine": {"load_average_start": list(load_start) if load_start else None,
                        "load_average_end": [1.02, 0.9, 0.8], "torch_threads": threads, "cpu_affinity": 2},
            "qaa_defaults": QAA_DEFAULTS,
            "tasks": {"e2e": {"train_pairs": 400, "test_inputs": 8, "test_input_texts": texts}},
            "selection": selection, "evals": evals, "runs": {}}


def _markdown(results: dict, tmp_path) -> str:
    return report.write_markdown(results, tmp_path / "results.md").read_text(encoding="utf-8")


KINDS = ("swept", "--lr", "--lr-from", "default")


@pytest.mark.parametrize("kind, n_seeds, overlap", list(itertools.product(KINDS, (2, 3), (True, False))))
def test_each_conditional_sentence_appears_exactly_where_it_is_true(kind, n_seeds, overlap, tmp_path):
    seeds = list(range(n_seeds))
    md = _markdown(_record(kind, seeds, overlap, selection_seed=0), tmp_path)
    swept = kind == "swept"
    # how the rates were set: one wording per source, and only the true one
    assert ("chosen by the lowest teacher-forced **validation** NLL of runs with training seed 0" in md) == swept
    assert ("given on the command line (`--lr`), not chosen by this run" in md) == (kind == "--lr")
    assert ("(`--lr-from earlier/results.json`" in md) == (kind == "--lr-from")
    assert ("learning-rate selection was off in this run" in md) == (kind == "default")
    # the sweep's winner: named only when a sweep ran and its seed is a final seed (here seed 0 is)
    assert ("training seed 0 of every method is the run that won its validation sweep" in md) == swept
    assert ("sweep-winning run" in md) == swept
    # the seed count as run, and the seed-level check's width at that count (t(1) = 12.706, t(2) = 4.303)
    assert f"{n_seeds} training seeds ({', '.join(map(str, seeds))})" in md
    assert ("t(1) = 12.71 / sqrt(2) = 8.98 standard deviations" in md) == (n_seeds == 2)
    assert ("t(2) = 4.30 / sqrt(3) = 2.48 standard deviations" in md) == (n_seeds == 3)
    assert ("**Seeds.** Only 2 training seeds" in md) == (n_seeds == 2)
    assert "with 3 seeds the bootstrap's seed level is coarse" not in md
    # QAA's defaults: the warning only where test inputs are among the inputs they were judged on
    assert ("2 of this run's 8 test inputs on e2e are among them (their scores may favour QAA's defaults)"
            in md) == overlap
    assert ("none of this run's test inputs (8 on e2e) is among them" in md) == (not overlap)
    assert "whose test inputs are these" not in md
    # p-values: LoRA is 0.5 nats worse on every drawn input, so every replicate is one-sided: p = 0
    assert "| < 0.001 | < 0.001 |" in md and "0.000" not in md
    assert "Holm-adjusted p < 0.001" in md


def test_a_sweep_apart_from_the_final_seeds_names_no_winner(tmp_path):
    md = _markdown(_record("swept", [0, 1, 2], False, selection_seed=100), tmp_path)
    assert "runs with training seed 100" in md
    assert "the sweeps trained with selection seed 100, which is not one of the final seeds" in md
    assert "won its validation sweep" not in md and "sweep-winning" not in md
    assert "validation NLL of training seed 100; chosen in bold" in md


def test_given_and_swept_methods_in_one_run_are_each_named(tmp_path):
    results = _record("swept", [0, 1, 2], False, selection_seed=0)
    results["selection"]["e2e|lora"].update(swept=False, given=True, given_by="--lr")
    md = _markdown(results, tmp_path)
    assert "QAA: chosen by the lowest teacher-forced **validation** NLL" in md
    assert "LoRA r=8: given on the command line (`--lr`)" in md
    assert "training seed 0 of QAA is the run that won its validation sweep" in md
    assert "| LoRA r=8 | " in md and "(given by `--lr`)" in md
    results["selection"]["e2e|lora"].update(given_by="--lr-from", chosen_on=["dart", "webnlg"])
    assert "(given by `--lr-from`: chosen on dart, webnlg's validation split)" in _markdown(results, tmp_path)


@pytest.mark.parametrize("load, threads, torch_threads, shared", [
    ((1.0, 0.9, 0.8), 1, 1, False),    # the load of one busy thread: this run's own, nothing else
    ((1.4, 1.0, 0.9), 1, 1, True),     # beyond one thread: other processes
    ((1.9, 1.5, 1.0), 0, 2, False),    # threads 0: the library default the machine recorded (2)
    ((2.5, 2.0, 1.0), 0, 2, True),
    (None, 1, 1, None),                # not recorded: nothing claimed either way
])
def test_shared_cores_only_when_load_beyond_the_runs_threads_was_measured(load, threads, torch_threads, shared,
                                                                       tmp_path):
    results = _record("--lr", [0, 1, 2], False, load_start=load, threads=threads)
    results["machine"]["torch_threads"] = torch_threads
    assert report.shared_cores(results) is shared
    md = _markdown(results, tmp_path)
    assert ("other processes shared the cores" in md) == (shared is True)
    if load is not None:
        assert f"before any work, was {load[0]:.2f}" in md and "at the end 1.02" in md
    assert ("no other load was measured at the start" in md) == (shared is False)
    assert ("other load on the cores is unknown" in md) == (shared is None)


def test_one_seed_says_no_difference_can_be_significant(tmp_path):
    md = _markdown(_record("--lr", [0], False), tmp_path)
    assert "1 training seed (0)" in md
    assert "with 1 seed there is none, so no difference can be called significant" in md
    assert "**Seeds.** Only 1 training seed" in md


def test_the_report_names_its_nll_once(tmp_path):
    results = _record("--lr", [0, 1, 2], False)
    for ev in results["evals"].values():
        ev["metrics"] = {"nll": float(np.mean(ev["nll"])), "nll_token_weighted": 1.23}
    md = _markdown(results, tmp_path)
    assert md.count(report.NLL_LINE) == 1
    assert "`metrics.nll_token_weighted`" in md
    # an older record (its metrics.nll token-weighted, no nll_token_weighted): the report says so instead
    for ev in results["evals"].values():
        ev["metrics"] = {"nll": 1.23}
    md = _markdown(results, tmp_path)
    assert report.NLL_LINE not in md and "its `metrics.nll` is token-weighted" in md


def test_seed_notice_widths_match_student_t():
    # t(1, 0.975) = 12.7062, t(2, 0.975) = 4.3027 (tables); the half-widths in sd units are t / sqrt(S)
    assert seed_level_factor(2) == pytest.approx(12.7062 / 2 ** 0.5, abs=1e-4)
    assert seed_level_factor(3) == pytest.approx(4.3027 / 3 ** 0.5, abs=1e-4)
    assert report.seed_notice(3) is None and report.seed_notice(5) is None
    two = report.seed_notice(2)
    # two per-seed differences a, b: |a + b| / 2 > 12.706 |a - b| / 2 iff |a - b| < (2 / 12.706) |mean|
    assert "less than 15.7% of their mean" in two and "8.98 standard deviations" in two
    assert "cannot pass" in report.seed_notice(1)
    with pytest.raises(ValueError, match="2 or more seeds"):
        seed_level_factor(1)


def test_p_values_below_a_thousandth_print_as_such():
    assert format_p(0.0) == "< 0.001" and format_p(0.00099) == "< 0.001"
    assert format_p(0.001) == "0.001" and format_p(0.0456) == "0.046" and format_p(1.0) == "1.000"
    for bad in (-0.1, 1.5, float("nan"), "0.1", None):
        with pytest.raises(ValueError, match="p-value"):
            format_p(bad)


def test_defaults_overlap_compares_mrs_as_slot_sets():
    judged = QAA_DEFAULTS["judged_on"]
    assert len(judged) == 43 and "name: Cocum, eatType: coffee shop, near: The Rice Boat" in judged
    # the E2E CSV form of one of them, slots reordered, matches; a changed value does not
    assert canonical_input("near[The Rice Boat], name[Cocum], eatType[coffee shop]") == \
        canonical_input("name: Cocum, eatType: coffee shop, near: The Rice Boat")
    assert defaults_overlap(["name[Cocum], eatType[pub], near[The Rice Boat]", JUDGED[0], "(a | b | c)"]) == [1]
    with pytest.raises(ValueError, match="judged_on"):
        defaults_overlap(JUDGED, {"task": "e2e_nlg"})
    with pytest.raises(TypeError, match="string"):
        canonical_input(None)


def test_selection_table_names_each_methods_validation_seed(tmp_path):
    """A swept method validates with the selection seed, a given one with its first final seed."""
    results = _record("swept", [0, 1, 2], False, selection_seed=100)
    results["selection"]["e2e|lora"].update(swept=False, given=True, given_by="--lr", seed=0)
    md = _markdown(results, tmp_path)
    assert "validation NLL of training seed 100 for QAA; training seed 0 for LoRA r=8; chosen in bold" in md
    assert "runs with training seed 100" in md and "not one of the final seeds" in md


@pytest.mark.parametrize("rule, shown", [("category", True), ("triples", False)])
def test_the_held_out_table_only_for_held_out_categories(rule, shown, tmp_path):
    results = _record("swept", [0, 1, 2], False)
    results["tasks"]["e2e"].update(test_seen=[True] * 4 + [False] * 4, test_seen_rule=rule)
    md = _markdown(results, tmp_path)
    assert ("**Generalisation** (QAA − method on held-out-category inputs" in md) == shown


def test_the_lr_from_file_is_the_one_the_selection_read(tmp_path):
    # a later invocation without --lr-from (e.g. another task swept) leaves settings.lr_from empty: the
    # sentence takes the file from the selection records, and never prints "None"
    results = _record("--lr-from", [0, 1, 2], False)
    results["settings"]["lr_from"] = None
    md = _markdown(results, tmp_path)
    assert "(`--lr-from`, checked to share" in md and "--lr-from None" not in md
    for sel in results["selection"].values():
        sel["lr_from"] = "runs/e2e_selection.json"
    assert "(`--lr-from runs/e2e_selection.json`, checked to share" in _markdown(results, tmp_path)


def _lora_rows(md: str):
    return [line for line in md.splitlines() if line.startswith("| LoRA r=8 | test NLL |")]


def test_size_sweep_configurations_get_their_own_holm_family(tmp_path):
    """Adding a size-sweep configuration (LoRA r=16) to a folder leaves the main table's Holm-adjusted p of
    LoRA r=8 as it was, and its own difference appears in a separate table. The data make the adjustment
    visible: LoRA r=8 differs from QAA by a small, noisy amount (0 < p < 0.5), LoRA r=16 not at all (p = 1), so
    a shared family of two would double LoRA r=8's adjusted p (Holm: the smaller p times 2)."""
    results = _record("swept", [0, 1, 2], False)
    rng = np.random.default_rng(7)
    qaa = np.asarray([results["evals"][f"e2e|qaa|lr=0.01|ratio=1|seed={s}"]["nll"] for s in range(3)])
    lora = qaa + 0.04 + rng.normal(0.0, 0.05, size=qaa.shape)
    for s in range(3):
        results["evals"][f"e2e|lora|lr=0.009|ratio=1|seed={s}"]["nll"] = lora[s].tolist()
    alone = _markdown(results, tmp_path)
    results["selection"]["e2e|lora_r16"] = dict(results["selection"]["e2e|lora"], lr=3e-3)
    for s in range(3):
        results["evals"][f"e2e|lora_r16|lr=0.003|ratio=1|seed={s}"] = {
            "status": "ok", "task": "e2e", "method": "lora_r16", "lr": 3e-3, "theta_lr_ratio": 1.0, "seed": s,
            "nll": qaa[s].tolist(), "scores": {}}
    both = _markdown(results, tmp_path)
    (row,) = _lora_rows(alone)
    p, p_holm = row.split("|")[6].strip(), row.split("|")[7].strip()
    assert p == p_holm and p not in ("< 0.001", "1.000") and float(p) < 0.5  # a family of one: p unchanged
    assert _lora_rows(both) == [row]
    assert "### Size sweep: QAA minus each added size" in both and "Size sweep" not in alone
    sweep_part = both.split("### Size sweep: QAA minus each added size")[1]
    assert "| LoRA r=16 | test NLL |" in sweep_part
    main_part = both.split("### Size sweep: QAA minus each added size")[0]
    assert "| LoRA r=16 | test NLL |" not in main_part and "vs LoRA r=16" not in main_part
