"""The hardware study's verdicts (benchmarks/hardware_study.py) on constructed records: which settings stay
inside the exact adapters' interval, and the fewest shots that keep a metric."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import hardware_study as study  # noqa: E402

pytest.importorskip("sacrebleu")


def _rec(method, seed, setting, nll, bleu_stats):
    return {"method": method, "seed": seed, "setting": setting, "nll": list(nll),
            "scores": {"bleu_stats": [list(r) for r in bleu_stats]}}


def _bleu_rows(n, matches):
    # [hyp_len, ref_len, correct 1..4, total 1..4] per input, sacrebleu's layout (10 numbers)
    return [[10, 10, matches, max(matches - 1, 0), max(matches - 2, 0), max(matches - 3, 0), 10, 9, 8, 7]
            for _ in range(n)]


def test_settings_inside_and_outside_the_exact_interval_and_the_shots_needed():
    rng = np.random.default_rng(1)
    n = 40
    base = 1.5 + 0.3 * rng.standard_normal(n)
    evals = {}
    for seed in (0, 1, 2):
        evals[f"qaa|{seed}|exact"] = _rec("qaa", seed, "exact", base, _bleu_rows(n, 8))
        # 10^4 and 10^3 shots: the exact values; 10^2: slightly worse but inside; 10: far worse
        evals[f"qaa|{seed}|shots=10000"] = _rec("qaa", seed, "shots=10000", base, _bleu_rows(n, 8))
        evals[f"qaa|{seed}|shots=1000"] = _rec("qaa", seed, "shots=1000", base + 0.001, _bleu_rows(n, 8))
        evals[f"qaa|{seed}|shots=100"] = _rec("qaa", seed, "shots=100", base + 0.5, _bleu_rows(n, 8))
        evals[f"qaa|{seed}|shots=10"] = _rec("qaa", seed, "shots=10", base + 2.0, _bleu_rows(n, 3))
    a = study.analyse({"evals": evals})["qaa"]
    lo, hi = a["intervals"]["nll"]
    assert lo < float(np.mean(base)) < hi and hi - lo < 0.4
    assert a["rows"]["shots=1000"]["nll"]["inside"] and not a["rows"]["shots=100"]["nll"]["inside"]
    assert a["shots_needed"]["nll"] == 1000
    assert a["rows"]["shots=100"]["bleu"]["inside"] and not a["rows"]["shots=10"]["bleu"]["inside"]
    assert a["shots_needed"]["bleu"] == 100
    assert a["seeds"] == [0, 1, 2] and a["inputs"] == n
    # The paired difference sees the small systematic shift at 1000 shots that the interval criterion does not.
    assert a["rows"]["shots=1000"]["nll"]["diff"] == pytest.approx(0.001)
    assert a["rows"]["shots=1000"]["nll"]["differs"] and not a["rows"]["shots=10000"]["nll"]["differs"]
    assert a["shots_no_difference"]["nll"] == 10000


def test_a_setting_on_fewer_seeds_is_compared_with_the_exact_runs_of_those_seeds():
    n = 10
    evals = {f"qaa|{s}|exact": _rec("qaa", s, "exact", [1.0 + s] * n, _bleu_rows(n, 8)) for s in (0, 1)}
    evals["qaa|0|shots=10"] = _rec("qaa", 0, "shots=10", [1.0] * n, _bleu_rows(n, 8))
    evals["qaa|7|shots=100"] = _rec("qaa", 7, "shots=100", [1.0] * n, _bleu_rows(n, 8))  # no exact run of seed 7
    a = study.analyse({"evals": evals})["qaa"]
    row = a["rows"]["shots=10"]
    assert row["seeds"] == [0] and row["nll"]["diff"] == 0.0 and row["nll"]["inside"]
    assert "shots=100" not in a["rows"] and a["shots_needed"]["nll"] == 10


def test_the_study_runs_end_to_end_on_a_tiny_comparison_and_resumes(tmp_path, capsys):
    """A comparison folder holding one final adapter of a tiny model: the study scores it exactly and at 10
    shots, writes every generation, the report and the charts, and a rerun skips what finished."""
    import json

    import torch

    import qaa
    from support import tiny_llama

    model, tok = tiny_llama(hidden=32, layers=1)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            layer.qaa_out["default"].weight.normal_(0, 0.5)
    cmp = tmp_path / "compare"
    qaa.save_adapter(model, str(cmp / "adapters" / "e2e" / "qaa" / "s0"))
    (cmp / "results.json").write_text(json.dumps({
        "settings": {"model": str(tmp_path / "tiny"), "seeds": [0], "split_seed": 1, "val_fraction": 0.1,
                     "test_fraction": 0.2},
        "selection": {"e2e|qaa": {"status": "ok", "lr": 0.01, "theta_lr_ratio": 1.0}},
        "runs": {"e2e|qaa|lr=0.01|ratio=1|seed=0": {"status": "ok", "adapter_dir": "adapters/e2e/qaa/s0"}}}))
    out = tmp_path / "study"
    argv = ["--compare", str(cmp), "--methods", "qaa", "--eval-size", "2", "--settings", "exact,shots=10",
            "--out", str(out)]
    assert study.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["evals"]) == {"qaa|0|exact", "qaa|0|shots=10"}
    exact, shots = res["evals"]["qaa|0|exact"], res["evals"]["qaa|0|shots=10"]
    assert len(exact["hypotheses"]) == 2 and exact["circuits"] is None
    assert shots["circuits"] > 0 and shots["shots_used"] == 10 * shots["circuits"]
    assert exact["nll"] != shots["nll"]  # 10 shots move the features, hence the NLL
    assert (out / "study.md").is_file() and (out / "shots.png").is_file()
    capsys.readouterr()
    assert study.main(argv) == 0  # resumes: nothing left to evaluate
    assert "NLL" not in capsys.readouterr().out


def test_local_depolarising_rows_state_their_trajectories_and_error(tmp_path):
    """A local-depolarising record is reported with its probability, its trajectory count and the standard-error
    bound 1/sqrt(T) (T = 400 here: 0.05), next to the exact row it is paired with."""
    n = 6
    evals = {"qaa|0|exact": _rec("qaa", 0, "exact", [1.0] * n, _bleu_rows(n, 8))}
    name = next(iter(study.LOCAL))
    local = _rec("qaa", 0, name, [1.1] * n, _bleu_rows(n, 8))
    local["fields"] = {"depolarizing": 0.02, "depolarizing_model": "local", "trajectories": 400}
    evals[f"qaa|0|{name}"] = local
    study.write_report({"task": "e2e", "eval_size": n, "compare": "c", "evals": evals}, tmp_path)
    text = (tmp_path / "study.md").read_text()
    assert "probability 0.02, simulated by 400 Pauli trajectories" in text
    assert "at most 1/sqrt(400) = 0.05 per feature" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
    assert "1.100 (out); +0.100" in row
    assert "shot count" not in text  # no shot setting was run: no shots verdict
