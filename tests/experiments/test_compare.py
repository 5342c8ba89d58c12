"""``qaa compare``: settings, the protocol (splits, selection on validation, seeds), outputs, resumption.

The fast tests run methods through :func:`qaa.experiments.compare.run_compare` on a tiny random Llama (saved to
a local folder and passed as ``--model``, the "any local causal LM" path) with small injected tasks, so no real
model or data is needed. The slow test runs ``qaa compare --preset smoke`` on SmolLM2 and the real data.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import qaa
from qaa.experiments import compare, registry
from qaa.experiments.compare import run_compare, run_key
from qaa.experiments.data import split_three
from qaa.experiments.presets import E2E_METHODS
from support import compare_args as _args
from support import fake_examples

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Every registered method but the size sweep's extra sizes (tests/experiments/test_size_sweep.py trains, saves
#: and reloads those on their own).
ALL_METHODS = tuple(m for m in registry.names() if m not in registry.SIZE_SWEEP or registry.get(m).default
                    or m in E2E_METHODS)
STEPS, BATCH = 2, 2


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    """The runs here use one thread (tiny matrices are slower on two); restore the thread counts afterwards."""
    from qaa import engine

    before = torch.get_num_threads(), engine.get_num_threads()
    yield
    torch.set_num_threads(before[0])
    engine.set_num_threads(before[1])


def _tiny_args(model_dir, out, **kw):
    base = dict(model=str(model_dir), tasks="e2e", steps=STEPS, batch_size=BATCH, seeds="0,1", max_new_tokens=4,
                no_bertscore=True, out=str(out), select_lr=False)
    base.update(kw)
    return _args(**base)


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, fake_tasks, tmp_path_factory):
    """Every registered method on two injected tasks, default rates, two seeds: the results and the folder."""
    out = tmp_path_factory.mktemp("compare")
    args = _tiny_args(tiny_model_dir, out, tasks="e2e,webnlg", methods=",".join(ALL_METHODS),
                      no_bertscore=False)
    return run_compare(args), out


@pytest.fixture(scope="module")
def swept_run(tiny_model_dir, fake_tasks, tmp_path_factory):
    """QAA and LoRA with the validation sweep (grids, widening, angle ratios)."""
    out = tmp_path_factory.mktemp("swept")
    return run_compare(_tiny_args(tiny_model_dir, out, methods="qaa,lora", select_lr=True)), out


def test_adapter_size_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"1234567")
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "y.json").write_bytes(b"{}")
    assert compare.adapter_size_bytes(tmp_path / "a") == 9
    with pytest.raises(FileNotFoundError):
        compare.adapter_size_bytes(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split_seed", [0, 1, 7, 123])
def test_split_is_disjoint_by_input_and_independent_of_training_seeds(split_seed):
    examples = fake_examples("e2e") + fake_examples("webnlg")
    train, val, test = split_three(examples, split_seed=split_seed, val_fraction=0.2, test_fraction=0.25)
    inputs = [{e.input for e in part} for part in (train, val, test)]
    assert all(inputs) and not (inputs[0] & inputs[1]) and not (inputs[0] & inputs[2]) and not (inputs[1] & inputs[2])
    assert sum(len(i) for i in inputs) == len({e.input for e in examples})
    # the split is a function of split_seed only: calling it again (as every training seed's run does) repeats it
    assert split_three(examples, split_seed=split_seed, val_fraction=0.2, test_fraction=0.25) == (train, val, test)


def test_test_inputs_do_not_move_with_the_training_seed(tiny_model_dir, fake_tasks, tmp_path):
    a = run_compare(_tiny_args(tiny_model_dir, tmp_path / "a", methods="bias", seeds="0"))
    b = run_compare(_tiny_args(tiny_model_dir, tmp_path / "b", methods="bias", seeds="5"))
    assert a["tasks"]["e2e"]["test_input_texts"] == b["tasks"]["e2e"]["test_input_texts"]
    c = run_compare(_tiny_args(tiny_model_dir, tmp_path / "c", methods="bias", seeds="0", split_seed=3))
    assert c["tasks"]["e2e"]["test_input_texts"] != a["tasks"]["e2e"]["test_input_texts"]


def test_selection_reads_validation_only(swept_run, tiny_model_dir, fake_tasks, tmp_path, monkeypatch):
    """Poisoning the test split before anything trains (garbage references and target tokens) and everything
    its scoring produces leaves every chosen rate and every validation NLL unchanged."""
    results, _ = swept_run
    import random

    from qaa.experiments.data import Example

    real_prepare, real_eval = compare.prepare_task, compare._evaluate

    def poisoned_prepare(*a, **kw):
        data = real_prepare(*a, **kw)
        rng = random.Random(0)
        data.test_ex = [Example(e.input, ("zz qq xx",)) for e in data.test_ex]
        data.test_pairs = [(ids, [t if t == -100 else rng.randrange(100) for t in labels])
                           for ids, labels in data.test_pairs]
        return data

    def poisoned_eval(model, data, *a, **kw):
        rec = real_eval(model, data, *a, **kw)
        rng = random.Random(len(rec["nll"]))
        rec["nll"] = [rng.uniform(0, 50) for _ in rec["nll"]]
        rec["scores"]["rougeL"] = [rng.uniform(0, 100) for _ in rec["scores"]["rougeL"]]
        return rec

    monkeypatch.setattr(compare, "prepare_task", poisoned_prepare)
    monkeypatch.setattr(compare, "_evaluate", poisoned_eval)
    again = run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="qaa,lora", select_lr=True))
    for key in ("e2e|qaa", "e2e|lora"):
        first, second = results["selection"][key], again["selection"][key]
        assert (first["lr"], first["theta_lr_ratio"]) == (second["lr"], second["theta_lr_ratio"])
        assert first["grid"] == second["grid"]


def test_sweep_covers_the_grid_widens_edges_and_picks_the_lowest_validation_nll(swept_run):
    results, _ = swept_run
    for method in ("qaa", "lora"):
        sel = results["selection"][f"e2e|{method}"]
        assert sel["status"] == "ok" and sel["swept"] and sel["criterion"].startswith("validation NLL")
        rates = sorted({g["lr"] for g in sel["grid"]})
        assert set(registry.get(method).lr_grid) <= set(rates)
        best = min(sel["grid"], key=lambda g: g["val_nll"])
        assert (sel["lr"], sel["theta_lr_ratio"]) == (best["lr"], best["theta_lr_ratio"])
        at_one = [g for g in sel["grid"] if g["theta_lr_ratio"] == 1.0]
        best_one = min(at_one, key=lambda g: g["val_nll"])["lr"]
        widened = len(rates) > len(registry.get(method).lr_grid)
        assert widened or min(rates) < best_one < max(rates)   # a best rate on the edge was widened
        ratios = {g["theta_lr_ratio"] for g in sel["grid"]}
        assert ratios == ({1.0, 10.0, 100.0} if method == "qaa" else {1.0})
        # the sweep trains with the selection seed (the cpu preset's 100), apart from the final seeds 0 and 1,
        # each of which is a run of its own with the chosen configuration
        assert sel["seed"] == 100
        sweep_seeds = {r["seed"] for r in results["runs"].values() if r["method"] == method
                       and (r["lr"], r["theta_lr_ratio"]) != (sel["lr"], sel["theta_lr_ratio"])}
        assert sweep_seeds == {100}
        for seed in (0, 1, 100):
            key = run_key("e2e", method, sel["lr"], sel["theta_lr_ratio"], seed)
            assert results["runs"][key]["status"] == "ok"
            assert (results["evals"].get(key, {}).get("status") == "ok") == (seed != 100)


def test_a_grid_centred_on_an_earlier_choice_is_widened_and_keeps_the_angle_ratio(tiny_model_dir, fake_tasks,
                                                                                   tmp_path, monkeypatch, capsys):
    """--lr-grid-from: the sweep tries (c/3, c, 3c) around the earlier rate c, follows an edge best by factors
    of 3 as a registered grid does, and, for QAA, trains every sweep run at the carried angle-rate ratio
    without sweeping ratios again; SoRA sweeps its rate at threshold factor 1 and then its factors again (the
    earlier factor is not carried); a method whose earlier selection failed gets its registered grid. The
    validation NLL is replaced by |ln(lr / 9c)| (+1 at a factor other than 1; best at 9c), so the expected rates
    are known: c/3, c, 3c (to 6 digits), then 9c (the edge was best), then 27c (worse: widening stops)."""
    centres = {"qaa": 1e-2, "lora": 0.009000000000000001, "sora": 1e-3, "bias": 1e-2}
    split = dict(split_seed=1, val_fraction=0.1, test_fraction=0.25)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"settings": split, "selection": {
        "e2e|qaa": {"status": "ok", "lr": centres["qaa"], "theta_lr_ratio": 10.0, "swept": True},
        "e2e|lora": {"status": "ok", "lr": centres["lora"], "theta_lr_ratio": 1.0, "swept": False},
        "e2e|sora": {"status": "ok", "lr": centres["sora"], "theta_lr_ratio": 30.0, "swept": True},
        "e2e|bias": {"status": "error", "error": "diverged"}}}))
    real = compare._train_run

    def scored(data, method, lr, ratio, seed, *a, **kw):
        rec = real(data, method, lr, ratio, seed, *a, **kw)
        rec["val_nll"] = abs(math.log(lr / (9 * centres[method]))) + (0.0 if ratio == 1.0 else 1.0)
        return rec

    monkeypatch.setattr(compare, "_train_run", scored)
    out = tmp_path / "out"
    results = run_compare(_tiny_args(tiny_model_dir, out, methods="qaa,lora,sora,bias", select_lr=True, seeds="0",
                                     split_seed=1, lr_grid_from=str(earlier)))
    assert "has no chosen rate for bias; their sweeps use the registered grids" in capsys.readouterr().err
    for method, ratio in (("qaa", 10.0), ("lora", 1.0), ("sora", 1.0)):
        c = float(f"{centres[method]:.6g}")   # 0.009000000000000001 is centred as 0.009, as run keys print it
        sel = results["selection"][f"e2e|{method}"]
        assert sel["swept"] and sel["grid_centre"] == c and sel["grid_from"] == str(earlier)
        assert sel["ratio_carried"] == (method == "qaa")
        rate_runs = [g for g in sel["grid"] if g["theta_lr_ratio"] == ratio]
        grid = [float(f"{x:.6g}") for x in (c / 3, c, 3 * c)]   # the grid as run keys print it
        assert sorted(g["lr"] for g in rate_runs) == pytest.approx(grid + [9 * c, 27 * c], rel=1e-12)
        others = sorted(g["theta_lr_ratio"] for g in sel["grid"] if g["theta_lr_ratio"] != ratio)
        assert others == ([10.0, 30.0, 100.0, 300.0] if method == "sora" else [])   # SoRA's factors swept again
        assert sel["lr"] == pytest.approx(9 * c, rel=1e-12) and sel["theta_lr_ratio"] == ratio
        key = run_key("e2e", method, sel["lr"], ratio, 0)
        assert results["runs"][key]["status"] == "ok" and results["evals"][key]["status"] == "ok"
    bias = results["selection"]["e2e|bias"]
    assert bias["grid_centre"] is None and bias["grid_from"] == str(earlier)
    assert set(registry.get("bias").lr_grid) <= {g["lr"] for g in bias["grid"]}
    md = (out / "results.md").read_text()
    assert "the rate chosen on validation on e2e in" in md and "the rate given on e2e in" in md
    assert "angle-rate ratio carried over, not swept again" in md and "has no chosen rate for it" in md
    assert "tried a grid (c/3, c, 3c) around the rate c" in md and "QAA kept that comparison's angle-rate" in md


def test_a_small_pool_run_reports_capacity_and_judges_no_claim(tiny_model_dir, fake_tasks, tmp_path):
    """--train-size: the first inputs of the training split only; the report gives the small-pool tables and
    neither the claims table nor convergence verdicts (a pool's validation curves turn up with overfitting)."""
    results = run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="qaa,lora_r4", train_size=2))
    assert results["tasks"]["e2e"]["train_inputs"] == 2
    md = (tmp_path / "results.md").read_text()
    assert "claims are not judged by this run" in md and "**Capacity on a small pool** (2 training inputs" in md
    assert "QAA minus each method on the pool, paired by training seed" in md
    assert "| claim |" not in md and "**Convergence**" not in md and "**Stability.**" not in md
    assert "Verdicts (generated" not in md and "No verdict sentences for a small-pool run" in md
    assert "at the end of this run's training on the small pool" in md


def test_validation_curve_checkpoints_equal_a_separate_evaluation(swept_run):
    """The curve's last point (the trained weights, before saving) equals the validation NLL of the same weights
    reloaded from the saved adapter (here the curve subset is the whole validation split)."""
    results, _ = swept_run
    for rec in (r for r in results["runs"].values() if r.get("status") == "ok"):
        steps = [p[0] for p in rec["val_curve"]]
        assert steps == [0] + compare.checkpoint_steps(STEPS, 8)
        assert rec["val_curve_pairs"] == results["tasks"]["e2e"]["val_pairs"]
        assert rec["val_curve"][-1][1] == pytest.approx(rec["val_nll"], rel=1e-5)
    assert compare.checkpoint_steps(32, 8) == [4, 8, 12, 16, 20, 24, 28, 32]
    assert compare.checkpoint_steps(3, 8) == [1, 2, 3] and compare.checkpoint_steps(5, 0) == []


def test_every_method_trains_saves_and_reloads_identically(tiny_run):
    results, out = tiny_run
    for task in ("e2e", "webnlg"):
        for method in ALL_METHODS:
            for seed in (0, 1):
                sel = results["selection"][f"{task}|{method}"]
                key = run_key(task, method, sel["lr"], sel["theta_lr_ratio"], seed)
                run, ev = results["runs"][key], results["evals"][key]
                assert run["status"] == "ok" and ev["status"] == "ok", (key, run.get("error"), ev.get("error"))
                assert run["reload_max_abs_diff"] <= (1e-5 if method == "prefix" else 0.0), key
                assert len(run["losses"]) == STEPS and all(math.isfinite(x) for x in run["losses"])
                assert math.isfinite(run["val_nll"]) and all(math.isfinite(x) for x in ev["nll"])
                n = results["tasks"][task]["test_inputs"]
                assert len(ev["hypotheses"]) == len(ev["nll"]) == len(ev["scores"]["rougeL"]) == n
                assert len(ev["scores"]["bertscore_f1"]) == n
                assert (out / run["adapter_dir"]).is_dir() and run["adapter_bytes"] > 0


def test_frozen_theta_stays_bit_identical_and_bias_counts(tiny_run, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    results, out = tiny_run
    sel = results["selection"]["e2e|qaa_frozen_theta"]
    run = results["runs"][run_key("e2e", "qaa_frozen_theta", sel["lr"], sel["theta_lr_ratio"], 0)]
    saved = load_file(str(out / run["adapter_dir"] / "adapter_model.safetensors"))
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    base = qaa.attach(AutoModelForCausalLM.from_config(cfg),
                      qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=4, seed=0))
    initial = {f"{name}.theta": layer.qaa_theta["default"].detach() for name, layer in qaa.qaa_layers(base)}
    assert initial and all(torch.equal(saved[k], v) for k, v in initial.items())
    # bias: one d_out vector per adapted layer
    kv = cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    sel = results["selection"]["e2e|bias"]
    run = results["runs"][run_key("e2e", "bias", sel["lr"], sel["theta_lr_ratio"], 0)]
    assert run["trainable_params"] == cfg.num_hidden_layers * (cfg.hidden_size + kv)
    sel = results["selection"]["e2e|lora_r4"]
    run = results["runs"][run_key("e2e", "lora_r4", sel["lr"], sel["theta_lr_ratio"], 0)]
    assert run["trainable_params"] == cfg.num_hidden_layers * 4 * ((cfg.hidden_size * 2) + (cfg.hidden_size + kv))


def test_outputs_report_and_plots(tiny_run, tmp_path):
    results, out = tiny_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["evals"].keys() == results["evals"].keys() and saved["settings"]["seeds"] == [0, 1]
    with open(out / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == STEPS * len(results["runs"]) and all(math.isfinite(float(r["loss"])) for r in rows)
    md = (out / "results.md").read_text()
    for text in ("## e2e", "## webnlg", "Learning-rate selection", "QAA minus each method", "Verdicts",
                 "validation", "seen", "unseen", "Peak training memory", "Model:", "Secondary comparisons", "Do the angles matter for",
                 f"{registry.label('qaa_std')} against {registry.label('lora_r4')} (post hoc):",
                 "## Across tasks", "| LoRA r=8 | test NLL | e2e ", "![differences](differences.png)"):
        assert text in md, text
    for method in ALL_METHODS:
        assert f"| {registry.label(method)} |" in md, method
    for name in ("loss_e2e.png", "metrics_e2e.png", "loss_webnlg.png", "metrics_webnlg.png", "curves_e2e.png",
                 "curves_webnlg.png", "differences.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    # the report is a function of results.json alone
    from qaa.experiments.report import main

    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_text((out / "results.json").read_text())
    assert main([str(copy)]) == 0
    assert (copy / "results.md").read_text() == md


def test_resume_reuses_finished_runs_and_gives_the_same_tables(tiny_model_dir, fake_tasks, tmp_path, monkeypatch):
    args = _tiny_args(tiny_model_dir, tmp_path, methods="qaa,bias")
    real_train = compare._train_run
    calls = []

    def interrupt_bias_seed1(data, method, lr, ratio, seed, *a, **kw):
        calls.append((method, seed))
        if method == "bias" and seed == 1:
            raise KeyboardInterrupt
        return real_train(data, method, lr, ratio, seed, *a, **kw)

    monkeypatch.setattr(compare, "_train_run", interrupt_bias_seed1)
    with pytest.raises(KeyboardInterrupt):
        run_compare(args)
    partial = json.loads((tmp_path / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in partial["runs"].values()} == {("qaa", 0), ("qaa", 1), ("bias", 0)}
    calls.clear()
    def counting(data, method, lr, ratio, seed, *a, **kw):
        calls.append((method, seed))
        return real_train(data, method, lr, ratio, seed, *a, **kw)

    monkeypatch.setattr(compare, "_train_run", counting)
    first = run_compare(args)
    assert calls == [("bias", 1)]                     # only the missing run trained
    def tables(md: str) -> str:  # the per-task sections; the header records each invocation's machine load
        return md[md.index("\n## "):]

    md = (tmp_path / "results.md").read_text()
    calls.clear()
    again = run_compare(args)                          # everything finished: nothing runs, same tables
    assert calls == [] and again["evals"] == first["evals"]
    assert tables((tmp_path / "results.md").read_text()) == tables(md)


def test_resume_refuses_an_incompatible_folder_and_keeps_it(tiny_model_dir, fake_tasks, tmp_path, capsys):
    run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="bias", seeds="0"))
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(ValueError, match="incompatible comparison .*steps"):
        run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="bias", seeds="0", steps=STEPS + 1))
    from qaa.experiments.cli import main

    assert main(["compare", "--model", str(tiny_model_dir), "--tasks", "e2e", "--methods", "bias", "--steps", "3",
                 "--no-progress", "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_bytes() == before


def test_eval_size_beyond_the_pool_is_an_error_naming_the_option(tiny_model_dir, fake_tasks, tmp_path):
    with pytest.raises(ValueError, match="--eval-size 50 exceeds the 2 test inputs"):
        run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="bias", eval_size=50))
    assert not (tmp_path / "results.json").exists()


def test_a_failing_method_is_recorded_and_the_others_run(tiny_model_dir, fake_tasks, tmp_path, monkeypatch):
    def flaky(model, ctx):
        raise RuntimeError("injected failure")

    monkeypatch.setitem(registry._REGISTRY, "prefix", dataclasses.replace(registry.get("prefix"), attach=flaky))
    results = run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="lora,prefix", seeds="0"))
    status = {r["method"]: r["status"] for r in results["runs"].values()}
    assert status == {"lora": "ok", "prefix": "error"}
    failed = next(r for r in results["runs"].values() if r["method"] == "prefix")
    assert failed["error"] == "RuntimeError: injected failure" and "flaky" in failed["traceback"]
    assert results["selection"]["e2e|prefix"]["status"] == "error"
    assert "injected failure" in (tmp_path / "results.md").read_text()


def test_every_run_failing_is_an_error(tiny_model_dir, fake_tasks, tmp_path, monkeypatch):
    def broken(model, ctx):
        raise RuntimeError("broken")

    monkeypatch.setitem(registry._REGISTRY, "bias", dataclasses.replace(registry.get("bias"), attach=broken))
    monkeypatch.setattr(compare, "_evaluate", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("no eval")))
    with pytest.raises(RuntimeError, match="every run failed"):
        run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="bias", seeds="0"))


@pytest.mark.parametrize("seeds, warned", [("0", True), ("0,1", True), ("0,1,2", False)])
def test_fewer_than_three_seeds_warn_at_the_start(seeds, warned, fake_tasks, tmp_path, capsys):
    """The warning comes before anything is loaded (the model folder here does not exist)."""
    with pytest.raises(FileNotFoundError):
        run_compare(_args(model=str(tmp_path / "no-model"), tasks="e2e", methods="bias", seeds=seeds,
                          out=str(tmp_path / "out"), select_lr=False))
    err = capsys.readouterr().err
    assert ("qaa compare: warning: Only" in err) == warned
    if seeds == "0,1":
        assert "t(1) = 12.71" in err and "less than 15.7% of their mean" in err


def test_given_rates_and_two_seeds_report_only_what_is_true(tiny_model_dir, fake_tasks, tmp_path):
    """The run of the report's first reader: two seeds, every rate given on the command line."""
    import statistics

    from transformers import AutoTokenizer

    from qaa.experiments.pipeline import load_splits

    results = run_compare(_tiny_args(tiny_model_dir, tmp_path, methods="qaa,lora", lr="qaa=0.01,lora=0.009"))
    md = (tmp_path / "results.md").read_text()
    for false in ("won its validation sweep", "sweep-winning", "chosen by the lowest teacher-forced",
                  "with 3 seeds", "whose test inputs are these", "0.000 |"):
        assert false not in md, false
    for true in ("every method: given on the command line (`--lr`), not chosen by this run",
                 "2 training seeds (0, 1)", "**Seeds.** Only 2 training seeds", "(given by `--lr`)",
                 report_nll_line()):
        assert true in md, true
    for key in ("e2e|qaa", "e2e|lora"):
        sel = results["selection"][key]
        assert sel["given"] and sel["given_by"] == "--lr" and not sel["swept"]
    assert results["qaa_defaults"]["task"] == "e2e_nlg" and len(results["qaa_defaults"]["judged_on"]) == 43
    assert results["machine"]["load_average_start"] is not None
    # one headline NLL: metrics.nll is the mean of the per-input NLLs; the token-weighted one has its own name,
    # recomputed here from each input's target tokens (reference + eos) over all its references
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    s = results["settings"]
    test = load_splits("e2e", s["split_seed"], s["val_fraction"], s["test_fraction"]).test
    tokens = [sum(len(tok(" " + r.strip(), add_special_tokens=False)["input_ids"]) + 1 for r in e.references)
              for e in test]
    evals = [ev for ev in results["evals"].values() if ev.get("method") in ("qaa", "lora")]
    assert len(evals) == 4
    for ev in evals:
        assert ev["metrics"]["nll"] == pytest.approx(statistics.fmean(ev["nll"]), rel=1e-12)
        weighted = sum(n * t for n, t in zip(ev["nll"], tokens)) / sum(tokens)
        assert ev["metrics"]["nll_token_weighted"] == pytest.approx(weighted, rel=1e-9)


def report_nll_line() -> str:
    from qaa.experiments.report import NLL_LINE

    return NLL_LINE


@pytest.mark.slow
def test_compare_smoke_preset_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = tmp_path / "smoke"
    proc = subprocess.run([sys.executable, "-m", "qaa.experiments.cli", "compare", "--preset", "smoke", "--no-progress",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in results["runs"].values()} == {"qaa", "lora", "prefix", "sora"}
    for r in results["runs"].values():
        assert r["status"] == "ok" and r["reload_max_abs_diff"] < 1e-3, r["method"]
    lora = next(r for r in results["runs"].values() if r["method"] == "lora")
    assert lora["trainable_params"] == 30 * 8 * ((576 + 576) + (576 + 192))   # SmolLM2-135M q/v, r=8
    assert (out / "results.md").read_text().startswith("# qaa compare: results")
    # --no-progress silences every bar (model loading and conversion included); no FutureWarning from peft's
    # read of is_gradient_checkpointing; the one-seed preset is warned about at the start
    for text in ("Loading weights", "Writing model shards", "de-quantizing", "it/s]", "is_gradient_checkpointing"):
        assert text not in proc.stderr and text not in proc.stdout, text
    assert "qaa compare: warning: Only 1 training seed" in proc.stderr


def test_records_copied_without_adapters_resume_by_retraining_unscored_runs(tiny_model_dir, fake_tasks, tmp_path):
    """A results.json copied without its adapters folder (partial results committed to the repository): a final
    run whose evaluation is missing is trained again (same seed: the same record) and scored; scored ones stay."""
    import shutil

    args = _tiny_args(tiny_model_dir, tmp_path, methods="bias", seeds="0,1")
    first = run_compare(args)
    key1 = next(k for k, r in first["runs"].items() if r["seed"] == 1)
    data = json.loads((tmp_path / "results.json").read_text())
    del data["evals"][key1]
    (tmp_path / "results.json").write_text(json.dumps(data))
    shutil.rmtree(tmp_path / "adapters")
    again = run_compare(args)
    assert again["evals"][key1]["status"] == "ok"
    assert again["evals"][key1]["hypotheses"] == first["evals"][key1]["hypotheses"]
    assert again["runs"][key1]["losses"] == first["runs"][key1]["losses"]
    key0 = next(k for k, r in first["runs"].items() if r["seed"] == 0)
    assert again["evals"][key0] == first["evals"][key0]   # scored before: not redone
