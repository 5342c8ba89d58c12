"""The report's pairing rules and significance marks, on constructed per-input records (no training)."""
import numpy as np
import pytest

from qaa.experiments import report
from qaa.experiments.stats import holm, paired_difference

SEEDS = [0, 1, 2]


def _entry(seeds, nll):
    """A method entry as :func:`report.collect` builds it: evals in seed order and the per-input arrays."""
    nll = np.asarray(nll, dtype=np.float64)
    return {"evals": [{"seed": s} for s in seeds], "runs": [], "selection": None,
            "arrays": {"nll": nll, "rougeL": 100 - 10 * nll}}


def test_differences_need_every_planned_seed_of_both_methods_with_the_same_seed_list():
    rng = np.random.default_rng(0)
    entries = {
        "qaa": _entry(SEEDS, rng.normal(1.5, 0.1, size=(3, 12))),
        "lora": _entry(SEEDS, rng.normal(1.4, 0.1, size=(3, 12))),
        "bias": _entry([0, 1, 3], rng.normal(1.6, 0.1, size=(3, 12))),   # another seed list
        "lora_r4": _entry([0, 1], rng.normal(1.6, 0.1, size=(2, 12))),   # a seed still missing
    }
    pairs = report._paired_diffs(entries, [("qaa", m) for m in ("lora", "bias", "lora_r4")], len(SEEDS))
    assert list(pairs) == [("qaa", "lora")]
    # QAA itself missing a seed: no pair at all
    entries["qaa"] = _entry([0], entries["qaa"]["arrays"]["nll"][:1])
    assert report._paired_diffs(entries, [("qaa", "lora")], len(SEEDS)) == {}


def test_holm_adjustment_runs_over_the_whole_family():
    rng = np.random.default_rng(1)
    base = rng.normal(1.5, 0.2, size=(3, 30))
    entries = {"qaa": _entry(SEEDS, base)}
    for i, m in enumerate(("lora", "bias", "lora_r4")):
        entries[m] = _entry(SEEDS, base + 0.02 * (i + 1) + rng.normal(0, 0.05, size=base.shape))
    pairs = report._paired_diffs(entries, [("qaa", m) for m in ("lora", "bias", "lora_r4")], len(SEEDS))
    cells = [(pair, k) for pair, d in pairs.items() for k in d]
    assert len(cells) == 6  # 3 pairs x (ROUGE-L, NLL): BLEU has no statistics in these records
    raw = [paired_difference(entries[a]["arrays"][k], entries[b]["arrays"][k], report.METRICS[k]).p
           for (a, b), k in cells]
    assert [pairs[pair][k].p for pair, k in cells] == pytest.approx(raw)
    assert [pairs[pair][k].p_adjusted for pair, k in cells] == pytest.approx(holm(raw))


def test_a_difference_significant_only_by_the_bootstrap_is_marked():
    from qaa.experiments.stats import Interval

    assert report._diff(Interval(1.0, -0.5, 2.0)).endswith("(n.s.)")
    assert report._diff(Interval(1.0, 0.5, 2.0, seed_lo=-1.0, seed_hi=3.0, p=0.01, p_adjusted=0.02)).endswith(
        "(n.s.†)")
    assert report._diff(Interval(1.0, 0.5, 2.0, seed_lo=0.1, seed_hi=1.9, p=0.001, p_adjusted=0.01)) == \
        "+1.00 [+0.50, +2.00]"
    assert report._lr(0.027) == "0.027" and report._lr(1e-3) == "0.001" and report._lr(3e-4) == "0.0003"


def test_point_estimates_count_the_methods_ahead_of_qaa():
    from qaa.experiments.stats import Interval

    # QAA - method on NLL (lower is better): +0.1 means the method is ahead; -0.1 means QAA is
    diffs = {"lora": {"nll": Interval(0.1, 0.05, 0.2)}, "bias": {"nll": Interval(-0.1, -0.2, 0.05)},
             "prefix": {"nll": Interval(0.02, -0.01, 0.05)}}
    lines = report._verdicts({}, diffs)
    assert ("- Point estimates on test NLL: 2 of the 3 other methods score better than QAA (LoRA r=8; "
            "prefix tuning (16 tokens)).") in lines


def test_the_checks_table_prints_each_seeds_difference_in_seed_order():
    # QAA - LoRA on NLL is 0.1, 0.2, 0.4 for seeds 0, 1, 2 on every input (a hand computation); ROUGE-L is
    # 100 - 10 NLL, so its differences are -1, -2, -4.
    qaa = np.full((3, 5), 1.5)
    lora = qaa - np.array([[0.1], [0.2], [0.4]])
    entries = {"qaa": _entry(SEEDS, qaa), "lora": _entry(SEEDS, lora)}
    pairs = report._paired_diffs(entries, [("qaa", "lora")], len(SEEDS))
    lines = report._diff_table("e2e", entries, {b: d for (_, b), d in pairs.items()})
    assert any("training seed (0, 1, 2);" in line for line in lines)  # no final run won a sweep: nothing said
    assert not any("sweep-winning" in line for line in lines)
    won = report._diff_table("e2e", entries, {b: d for (_, b), d in pairs.items()}, winner_seed=0)
    assert any("training seed (0, 1, 2; training seed 0 is the swept methods' sweep-winning run);" in line
               for line in won)
    rows = {line.split(" | ")[1]: line.split(" | ")[2] for line in lines if line.startswith("| LoRA r=8 | ")
            and line.count("|") == 9}
    assert rows == {"test NLL": "+0.100; +0.200; +0.400", "ROUGE-L": "-1.00; -2.00; -4.00"}


def _lengths(ratio_per_seed, n=6, ref_len=10):
    """``length_stats`` [S, N, 2] whose sys/ref ratio is exactly the given value per seed."""
    return np.array([[[r * ref_len, ref_len]] * n for r in ratio_per_seed], dtype=np.float64)


def test_length_flag_only_where_ratios_differ_by_more_than_a_tenth():
    from qaa.experiments.stats import Interval

    entries = {m: _entry(SEEDS, np.full((3, 6), 1.5)) for m in ("qaa", "lora", "bias")}
    entries["qaa"]["arrays"]["length_stats"] = _lengths([1.0, 1.0, 1.0])
    entries["lora"]["arrays"]["length_stats"] = _lengths([0.8, 0.8, 0.8])       # 0.2 shorter: flagged
    entries["bias"]["arrays"]["length_stats"] = _lengths([0.95, 0.95, 0.95])    # 0.05: not flagged
    intervals = {m: report._intervals(e) for m, e in entries.items()}
    assert intervals["lora"]["length_stats"].value == pytest.approx(0.8)
    diffs = {m: {"bleu_stats": Interval(5.0, 1.0, 9.0)} for m in ("lora", "bias")}
    lines = report._length_flags(entries, diffs, intervals)
    flagged = [line for line in lines if line.startswith("- BLEU")]
    assert len(flagged) == 1 and "LoRA r=8" in flagged[0] and "QAA 1.00" in flagged[0] and "0.80" in flagged[0]


def test_further_metrics_table_orients_ser_and_names_what_is_not_computed():
    rng = np.random.default_rng(3)
    entries = {m: _entry(SEEDS, rng.normal(1.5, 0.1, size=(3, 20))) for m in ("qaa", "lora")}
    # SER statistics (errors, slots): QAA makes 2 errors in 5 slots per input, LoRA 1 in 5
    entries["qaa"]["arrays"]["ser_stats"] = np.tile([2.0, 5.0], (3, 20, 1))
    entries["lora"]["arrays"]["ser_stats"] = np.tile([1.0, 5.0], (3, 20, 1))
    intervals = {m: report._intervals(e) for m, e in entries.items()}
    assert intervals["qaa"]["ser_stats"].value == pytest.approx(40.0)
    lines = report._extra_metrics(entries, {"seeds": SEEDS}, intervals, ["lora"])
    text = "\n".join(lines)
    assert "| SER (%) |" in text and "+20.00 [+20.00, +20.00]" in text
    assert report.METRICS["ser_stats"].higher_is_better is False and report.METRICS["ter_stats"].higher_is_better \
        is False
    assert "BLEURT" in text and "METEOR: not in this run's records" in text
    assert "SER's slot matcher" in text


def test_no_selection_table_for_a_task_with_only_the_base_model():
    """A task where only the untuned model is scored has no learning-rate selection to show: no empty table."""
    from qaa.experiments.report.tables import _selection_table

    entries = {"base": {"selection": None, "evals": [{}], "runs": []}}
    assert _selection_table({"settings": {"selection_seed": 100}}, "webnlg_unseen", entries) == []
