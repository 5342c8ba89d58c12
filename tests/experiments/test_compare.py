"""``qaa compare``: settings, the per-method machinery, outputs and report.

The fast tests run every method through :func:`qaa.experiments.compare.run_compare` on a tiny random Llama (saved to a
local folder and passed as ``--model``, the "any local causal LM" path) with a small injected task, so no
real model or data is needed. The slow test runs ``qaa compare --preset smoke`` on SmolLM2 and the real data.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qaa
import qaa.experiments.data
from qaa.experiments import compare, registry
from qaa.experiments.compare import METHOD_LR, PRESETS, resolve_settings, run_compare
from support import compare_args as _args

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_precision", "bertscore_recall", "bertscore_f1")
RUN_KEYS = ("trainable_params", "all_params", "trainable_pct", "adapter_bytes", "peak_memory_mb", "activation_mb",
            "mean_step_seconds", "median_step_seconds", "train_seconds", "eval_seconds", "loss_first", "loss_last",
            "reload_max_abs_diff")
TABLE_COLUMNS = ("method", "lr", "trainable params", "trainable %", "adapter", "peak mem (MiB)", "act. (MiB)",
                 "step (s)", "loss", "BLEU", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BERTScore (MiniLM-L6)")
ALL_METHODS = ("qaa", "lora", "prefix", "sora", "full")
STEPS, BATCH = 2, 2

@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    """The runs here use one thread (tiny matrices are slower on two); restore the thread counts afterwards."""
    from qaa import engine

    before = torch.get_num_threads(), engine.get_num_threads()
    yield
    torch.set_num_threads(before[0])
    engine.set_num_threads(before[1])


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, fake_tasks, tmp_path_factory):
    """Every method on two injected tasks, 2 steps each, BERTScore on: the results dict and the output folder."""
    out = tmp_path_factory.mktemp("compare")
    args = _args(model=str(tiny_model_dir), tasks="e2e_nlg,webnlg_en", methods=",".join(ALL_METHODS), steps=STEPS,
                 batch_size=BATCH, eval_size=2, max_new_tokens=6, out=str(out))
    return run_compare(args), out


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------

def test_presets_resolve_to_their_values():
    cpu = resolve_settings(_args(preset="cpu"))
    assert cpu.tasks == ("e2e_nlg", "webnlg_en")
    assert cpu.methods == ("qaa", "lora", "prefix", "sora")
    assert (cpu.steps, cpu.batch_size, cpu.eval_size) == (PRESETS["cpu"]["steps"], PRESETS["cpu"]["batch_size"],
                                                           PRESETS["cpu"]["eval_size"])
    assert cpu.lr == {m: METHOD_LR[m] for m in cpu.methods}
    assert cpu.warmup_steps == max(1, round(0.1 * cpu.steps))
    assert cpu.sora_xi == 3e-4 and cpu.bertscore and cpu.device == "cpu"
    assert resolve_settings(_args(preset="cpu", threads=None)).threads == 1
    assert resolve_settings(_args(preset="gpu", threads=None)).threads == 0
    assert resolve_settings(_args(preset="cpu", threads=2)).threads == 2
    gpu = resolve_settings(_args(preset="gpu"))
    assert "xsum" in gpu.tasks and gpu.methods[-1] == "full"
    assert gpu.steps > cpu.steps and gpu.batch_size > cpu.batch_size and gpu.eval_size > cpu.eval_size
    assert gpu.max_length["xsum"] > gpu.max_length["e2e_nlg"]
    smoke = resolve_settings(_args(preset="smoke"))
    assert smoke.steps < cpu.steps and smoke.eval_size < cpu.eval_size


def test_options_override_the_preset():
    s = resolve_settings(_args(preset="cpu", tasks="webnlg_en", methods="sora,qaa", full=True, steps=7,
                               batch_size=3, eval_size=5, max_length=64, max_new_tokens=9,
                               lr="qaa=1e-2,full=1e-5", sora_xi=0.01, no_bertscore=True))
    assert s.tasks == ("webnlg_en",)
    assert s.methods == ("qaa", "sora", "full")          # table order, --full appended
    assert (s.steps, s.batch_size, s.eval_size, s.max_new_tokens) == (7, 3, 5, 9)
    assert s.max_length == {"webnlg_en": 64}
    assert s.lr == {"qaa": 1e-2, "sora": METHOD_LR["sora"], "full": 1e-5}
    assert s.sora_xi == 0.01 and not s.bertscore and s.warmup_steps == 1


@pytest.mark.parametrize("kw, message", [
    (dict(methods="qaa,dora"), "unknown method"),
    (dict(tasks="e2e_nlg,squad"), "unknown task"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(batch_size=-2), "batch_size must be an integer >= 1"),
    (dict(eval_size=0), "eval_size must be an integer >= 1"),
    (dict(preset="tpu"), "unknown preset"),
    (dict(lr="lora"), "METHOD=LR"),
    (dict(lr="lora=-1"), "positive finite"),
    (dict(lr="dora=1e-3"), "METHOD=LR"),
    (dict(max_length=4), "max_length must be >= 8"),
    (dict(sora_xi=-1.0), "sora_xi"),
    (dict(threads=-1), "threads must be >= 0"),
])
def test_bad_settings_raise_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        resolve_settings(_args(**kw))


def test_cli_reports_bad_input(tmp_path, capsys):
    from qaa.experiments.cli import main

    assert main(["compare", "--methods", "qaa,dora", "--out", str(tmp_path)]) == 2
    assert "unknown method(s) dora" in capsys.readouterr().err
    assert main(["compare", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "steps must be an integer >= 1" in capsys.readouterr().err


def test_cli_parser_leaves_preset_values_unset():
    import qaa.experiments.cli as cli

    parser = cli.build_parser()
    args = parser.parse_args(["compare"])
    s = resolve_settings(args)
    assert (s.eval_size, s.max_new_tokens, s.threads) == (PRESETS["cpu"]["eval_size"],
                                                          PRESETS["cpu"]["max_new_tokens"], 1)
    assert s.max_length == {t: PRESETS["cpu"]["max_length"][t] for t in s.tasks}
    args = parser.parse_args(["compare", "--eval-size", "3", "--max-length", "80", "--lr", "qaa=2e-3"])
    s = resolve_settings(args)
    assert s.eval_size == 3 and set(s.max_length.values()) == {80} and s.lr["qaa"] == 2e-3


def test_adapter_size_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"1234567")
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "y.json").write_bytes(b"{}")
    assert compare.adapter_size_bytes(tmp_path / "a") == 9
    with pytest.raises(FileNotFoundError):
        compare.adapter_size_bytes(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# Every method through the comparison machinery (tiny model, injected tasks)
# --------------------------------------------------------------------------------------------------

def _expected_trainable(method: str, model_dir: Path) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    hidden, layers = cfg.hidden_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * hidden // cfg.num_attention_heads
    if method == "lora":
        return layers * 8 * ((hidden + hidden) + (hidden + kv))
    if method == "sora":
        return _expected_trainable("lora", model_dir) + layers * 2 * 8
    if method == "prefix":
        return 16 * layers * 2 * kv
    if method == "qaa":
        n = qaa.qubits_for_dim(hidden)
        theta = qaa.build_circuit("ry_cnot_ring", n, 4).n_params
        return layers * (2 * theta + n * hidden + n * kv)
    raise AssertionError(method)


def test_every_method_runs_and_records_finite_values(tiny_run, tiny_model_dir):
    results, out = tiny_run
    runs = results["runs"]
    assert [(r["task"], r["method"]) for r in runs] == [
        (t, m) for t in ("e2e_nlg", "webnlg_en") for m in ("base",) + ALL_METHODS]
    errors = [(r["task"], r["method"], r.get("error")) for r in runs if r["status"] != "ok"]
    assert not errors
    total = sum(p.numel() for p in torch.nn.Module.parameters(
        __import__("transformers").AutoModelForCausalLM.from_pretrained(tiny_model_dir)))
    for r in runs:
        assert set(METRIC_KEYS) <= set(r["metrics"])
        for k in METRIC_KEYS:
            assert math.isfinite(r["metrics"][k]) and 0.0 <= r["metrics"][k] <= 100.0, (r["method"], k)
        assert r["samples"] and all(isinstance(s["hypothesis"], str) for s in r["samples"])
        if r["method"] == "base":
            assert r["trainable_params"] == 0 and r["all_params"] == total
            continue
        for k in RUN_KEYS:
            assert isinstance(r[k], (int, float)) and math.isfinite(r[k]), (r["method"], k)
        assert len(r["losses"]) == len(r["step_seconds"]) == STEPS
        assert all(math.isfinite(x) and x > 0 for x in r["losses"] + r["step_seconds"])
        assert r["mean_step_seconds"] > 0 and r["activation_mb"] > 0 and r["peak_memory_mb"] >= 0
        assert r["lr"] == METHOD_LR[r["method"]]
        # peft's line and percentage agree with the counts
        assert r["trainable_line"] == (f"trainable params: {r['trainable_params']:,d} || all params: "
                                       f"{r['all_params']:,d} || trainable%: {r['trainable_pct']:.4f}")
        assert r["trainable_pct"] == pytest.approx(100 * r["trainable_params"] / r["all_params"])
        if r["method"] == "full":
            assert r["trainable_params"] == r["all_params"] == total
        else:
            assert r["trainable_params"] == _expected_trainable(r["method"], tiny_model_dir), r["method"]
        # the adapter on disk: the recorded size is the folder's, and it loads back to the same outputs
        folder = out / "adapters" / r["task"] / r["method"]
        assert Path(r["adapter_dir"]) == folder
        assert r["adapter_bytes"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) > 0
        assert r["reload_max_abs_diff"] < 1e-4, r["method"]


def test_adapter_sizes_follow_parameter_counts(tiny_run):
    results, _ = tiny_run
    runs = {r["method"]: r for r in results["runs"] if r["task"] == "e2e_nlg"}
    # float32 weights dominate the files: 4 bytes per trainable parameter plus headers/config
    for m in ("qaa", "lora", "prefix", "sora"):
        assert 4 * runs[m]["trainable_params"] <= runs[m]["adapter_bytes"] < 4 * runs[m]["trainable_params"] + 20000
    assert runs["full"]["adapter_bytes"] > runs["lora"]["adapter_bytes"]


def test_sora_is_pruned_and_ranks_recorded(tiny_run):
    results, _ = tiny_run
    for r in (r for r in results["runs"] if r["method"] == "sora"):
        sora = r["sora"]
        assert sora["xi"] == 3e-4 and sora["r_max"] == 8
        assert len(sora["ranks"]) == 4 and sum(sora["ranks"].values()) == sora["total_rank"]
        assert sora["total_rank_max"] == 32
        # two steps of a 3e-4 shrink cannot close a gate that starts at 1
        assert sora["ranks"] == sora["ranks_before_prune"] == {k: 8 for k in sora["ranks"]}
        # after pruning the gates are folded into B: the LoRA parameters remain
        assert sora["pruned_trainable_params"] == r["trainable_params"] - 32


def test_losses_csv_has_every_step(tiny_run):
    results, out = tiny_run
    with open(out / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["task", "method", "step", "loss", "step_seconds"]
    assert len(rows) == 2 * len(ALL_METHODS) * STEPS
    by_run = {}
    for row in rows:
        assert math.isfinite(float(row["loss"])) and float(row["step_seconds"]) > 0
        by_run.setdefault((row["task"], row["method"]), []).append(float(row["loss"]))
    for r in results["runs"]:
        if r["method"] != "base":
            assert by_run[(r["task"], r["method"])] == pytest.approx(r["losses"], abs=1e-6)


def test_results_json_matches_and_describes_the_run(tiny_run):
    results, out = tiny_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(results["runs"]))
    assert saved["settings"]["methods"] == list(ALL_METHODS) and saved["settings"]["steps"] == STEPS
    assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["device"] == "cpu"
    assert saved["versions"]["torch"] == torch.__version__
    assert saved["machine"]["load_average_start"] and saved["cpu_seconds"] > 0
    assert saved["versions"]["peft"] and saved["versions"]["transformers"]
    assert saved["wall_seconds"] > 0 and saved["finished"]
    for task in ("e2e_nlg", "webnlg_en"):
        info = saved["tasks"][task]
        assert info["test_inputs"] == 2 and info["train_inputs"] == 6 and info["train_pairs"] == 12
        assert info["budget_sequences"] == STEPS * BATCH


def test_markdown_report_has_every_table_and_column(tiny_run):
    results, out = tiny_run
    md = (out / "results.md").read_text()
    assert md == Path(results["report"]["markdown"]).read_text()
    for task in ("e2e_nlg", "webnlg_en"):
        assert f"## {task}" in md
    assert "## Across tasks" in md
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    assert md.count(header) == 2
    table_rows = [l for l in md.splitlines() if l.startswith("| ") and not l.startswith("| method")]
    for method in ALL_METHODS:
        assert sum(l.startswith(f"| {method} |") for l in table_rows) == 3  # two task tables + summary
    assert sum(l.startswith("| base (untuned) |") for l in table_rows) == 3
    for line in table_rows:
        assert "nan" not in line.lower() and "inf" not in line.lower()
    lora = next(l for l in table_rows if l.startswith("| lora |"))
    cells = [c.strip() for c in lora.strip("|").split("|")]
    assert len(cells) == len(TABLE_COLUMNS)
    r = next(r for r in results["runs"] if r["method"] == "lora")
    assert cells[2] == f"{r['trainable_params']:,d}" and cells[3] == f"{r['trainable_pct']:.4f}"
    assert cells[9] == f"{r['metrics']['bleu']:.2f}" and cells[13] == f"{r['metrics']['bertscore_f1']:.2f}"
    assert "SoRA after pruning" in md
    assert re.search(r"Wall time: \d+\.\d min, process CPU time \d+\.\d min", md)


def test_plots_are_valid_pngs(tiny_run):
    import matplotlib.image

    results, out = tiny_run
    plots = results["report"]["plots"]
    expected = {"loss_e2e_nlg.png", "loss_webnlg_en.png", "peak_memory.png", "trainable_params.png", "metrics.png",
                "step_time.png"}
    assert {Path(p).name for p in plots.values()} == expected
    for name in expected:
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        img = matplotlib.image.imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
        assert img[..., :3].std() > 0.01  # not a blank canvas
        assert f"]({name})" in (out / "results.md").read_text()


def test_report_rebuilds_from_results_json(tiny_run, tmp_path):
    from qaa.experiments.report import main

    _, out = tiny_run
    (tmp_path / "results.json").write_text((out / "results.json").read_text())
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_text().replace(str(tmp_path), "") == \
        (out / "results.md").read_text().replace(str(out), "")
    assert (tmp_path / "metrics.png").read_bytes()[:8] == PNG_MAGIC


def test_a_failing_method_is_recorded_and_the_others_run(tiny_model_dir, fake_tasks, tmp_path, monkeypatch):
    prefix = registry.get("prefix")

    def flaky(model, settings):
        raise RuntimeError("injected failure")

    monkeypatch.setitem(registry._REGISTRY, "prefix", dataclasses.replace(prefix, attach=flaky))
    args = _args(model=str(tiny_model_dir), tasks="e2e_nlg", methods="lora,prefix", steps=1, batch_size=2,
                 eval_size=2, max_new_tokens=4, no_bertscore=True, out=str(tmp_path))
    results = run_compare(args)
    status = {r["method"]: r["status"] for r in results["runs"]}
    assert status == {"base": "ok", "lora": "ok", "prefix": "error"}
    failed = next(r for r in results["runs"] if r["method"] == "prefix")
    assert failed["error"] == "RuntimeError: injected failure" and "flaky" in failed["traceback"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in saved["runs"]] == ["ok", "ok", "error"]
    md = (tmp_path / "results.md").read_text()
    assert "**prefix failed**: `RuntimeError: injected failure`" in md
    assert "BERTScore" in md and "bertscore_f1" not in saved["runs"][1]["metrics"]
    with open(tmp_path / "losses.csv", newline="") as f:
        assert {row["method"] for row in csv.DictReader(f)} == {"lora"}


def test_results_survive_an_interruption(tiny_model_dir, fake_tasks, tmp_path, monkeypatch):
    real_run = compare._run_method

    def interrupt_second(task, method, *a, **kw):
        if method == "sora":
            raise KeyboardInterrupt
        return real_run(task, method, *a, **kw)

    monkeypatch.setattr(compare, "_run_method", interrupt_second)
    args = _args(model=str(tiny_model_dir), tasks="e2e_nlg", methods="lora,sora", steps=1, batch_size=2,
                 eval_size=2, max_new_tokens=4, no_bertscore=True, out=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run_compare(args)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["status"]) for r in saved["runs"]] == [("base", "ok"), ("lora", "ok")]
    assert saved["finished"] and (tmp_path / "results.md").is_file() and (tmp_path / "loss_e2e_nlg.png").is_file()


# --------------------------------------------------------------------------------------------------
# End to end on SmolLM2 and the real data
# --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_smoke_preset_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = tmp_path / "smoke"
    proc = subprocess.run([sys.executable, "-m", "qaa.experiments.cli", "compare", "--preset", "smoke", "--no-progress",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    steps = PRESETS["smoke"]["steps"]
    methods = ("qaa", "lora", "prefix", "sora")
    assert [(r["method"], r["status"]) for r in results["runs"]] == [("base", "ok")] + [(m, "ok") for m in methods]
    for r in results["runs"]:
        for k in METRIC_KEYS:
            assert math.isfinite(r["metrics"][k]) and 0 <= r["metrics"][k] <= 100
        if r["method"] == "base":
            continue
        for k in RUN_KEYS:
            assert math.isfinite(r[k]), (r["method"], k)
        assert len(r["losses"]) == steps and all(math.isfinite(x) for x in r["losses"])
        assert r["reload_max_abs_diff"] < 1e-3, r["method"]
        assert 0 < r["trainable_pct"] < 1 and r["adapter_bytes"] > 4 * r["trainable_params"]
    by = {r["method"]: r for r in results["runs"]}
    assert by["lora"]["trainable_params"] == 30 * 8 * ((576 + 576) + (576 + 192))   # SmolLM2-135M q/v, r=8
    assert by["prefix"]["trainable_params"] == 16 * 30 * 2 * 192                     # 3 KV heads x 64
    with open(out / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(methods) * steps and all(math.isfinite(float(r["loss"])) for r in rows)
    md = (out / "results.md").read_text()
    assert "| " + " | ".join(TABLE_COLUMNS) + " |" in md and "## Across tasks" in md
    for name in ("loss_e2e_nlg.png", "peak_memory.png", "trainable_params.png", "metrics.png", "step_time.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
