"""Adding a method or a task is one registry entry: a toy method (the final norm's weight trained) and a toy
task (colour facts) run through attach, training, save, reload, both commands and the report without any other
change."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qaa.experiments import registry
from qaa.experiments.compare import run_compare

from support import compare_args as _args

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _attach(model, ctx):
    model.requires_grad_(False)
    model.model.norm.weight.requires_grad_(True)
    return model


def _save(model, folder):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"norm": model.model.norm.weight.detach().clone()}, str(folder / "toy.safetensors"))


def _reload(base, folder):
    with torch.no_grad():
        base.model.norm.weight.copy_(load_file(str(folder / "toy.safetensors"))["norm"])
    return base


@pytest.fixture
def toy_method():
    method = registry.register(registry.Method("toy", _attach, _save, _reload, lr=1e-2, colour="#000000",
                                               lr_source="test", default=False))
    yield method
    registry.unregister("toy")


def test_a_registered_method_runs_through_the_comparison(toy_method, tiny_model_dir, fake_tasks, tmp_path):
    assert "toy" in registry.names() and "toy" not in registry.default_names()
    args = _args(model=str(tiny_model_dir), tasks="e2e", methods="toy", steps=2, batch_size=2, eval_size=2,
                 max_new_tokens=4, no_bertscore=True, out=str(tmp_path), seeds="0", select_lr=False)
    results = run_compare(args)
    (run,) = [r for r in results["runs"].values() if r["method"] == "toy"]
    assert run["status"] == "ok", run.get("traceback")
    assert run["lr"] == 1e-2 and run["trainable_params"] == 64  # the tiny model's hidden width
    assert run["reload_max_abs_diff"] == 0.0
    assert (tmp_path / run["adapter_dir"] / "toy.safetensors").is_file()
    assert [e["status"] for e in results["evals"].values() if e["method"] == "toy"] == ["ok"]
    assert "| toy |" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["methods"] == {"e2e": ["toy"]}


def test_registry_refuses_taken_and_malformed_names():
    qaa_entry = registry.get("qaa")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(qaa_entry)
    with pytest.raises(ValueError, match="reserved"):
        registry.register(registry.Method("base", _attach, _save, _reload, lr=1.0, colour="k", lr_source=""))
    with pytest.raises(ValueError, match="without ','"):
        registry.register(registry.Method("a,b", _attach, _save, _reload, lr=1.0, colour="k", lr_source=""))
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        registry.get("nope")


@pytest.mark.parametrize("factor, zeroed", [(1.0, False), (max(registry.SORA_XI_FACTORS), True)])
def test_sora_threshold_at_the_top_of_its_grid_zeroes_gates_within_a_few_steps(factor, zeroed):
    """The release's per-step threshold (factor 1) cannot zero a Normal(0, 1) gate in 4 steps (it moves each by
    4 x 3e-4); the grid's top factor (4 x 0.09 = 0.36 per gate) zeroes the gates with |g| <= 0.36, about a
    quarter of them (P(|N(0,1)| <= 0.36) = 0.28)."""
    from types import SimpleNamespace

    from qaa.tuners.sora import sora_gates
    from support import tiny_llama

    model, _ = tiny_llama(seed=0)
    torch.manual_seed(0)
    ctx = registry.RunContext(settings=SimpleNamespace(sora_xi=registry.SORA_XI), seed=0, ratio=factor)
    spec = registry.get("sora")
    model = spec.attach(model, ctx)
    hooks = spec.hooks(model, ctx)
    gates = torch.cat([g.detach().flatten() for g in sora_gates(model)])
    expected_zero = int((gates.abs() <= 4 * registry.SORA_XI * factor).sum())
    for step in range(4):
        hooks.after_step(step)
    after = torch.cat([g.detach().flatten() for g in sora_gates(model)])
    assert int((after == 0).sum()) == expected_zero
    assert (expected_zero > 0) == zeroed
    if zeroed:
        assert 0.1 < expected_zero / gates.numel() < 0.6


@pytest.fixture
def toy_task():
    from qaa.experiments import tasks
    from qaa.experiments.data import Example, split_three

    colours = ["red", "green", "blue", "black", "white", "grey", "pink", "brown", "gold", "teal", "navy", "plum"]
    pool = [Example(f"thing[{i}], colour[{c}]", (f"Thing {i} is {c}.", f"The colour of thing {i} is {c}."))
            for i, c in enumerate(colours * 2)]

    def build(split_seed, val_fraction, test_fraction, data_dir=None):
        train, val, test = split_three(pool, split_seed=split_seed, val_fraction=val_fraction,
                                       test_fraction=test_fraction)
        return tasks.TaskSplits(train, val, test, info={"rule": "toy pool split three ways"})

    task = tasks.register(tasks.Task("toy_colours", "toy colour facts", "Describe: {input}\nText:", build))
    yield task
    del tasks.TASKS["toy_colours"]


def test_a_registered_task_runs_through_both_commands_and_the_report(toy_method, toy_task, tiny_model_dir,
                                                                     tmp_path):
    from qaa.experiments.cli import main

    args = _args(model=str(tiny_model_dir), tasks="toy_colours", methods="toy", steps=2, batch_size=2,
                 eval_size=2, max_new_tokens=4, no_bertscore=True, out=str(tmp_path / "cmp"), seeds="0",
                 select_lr=False)
    results = run_compare(args)
    assert results["settings"]["tasks"] == ["toy_colours"]
    assert [e["status"] for e in results["evals"].values() if e["method"] == "toy"] == ["ok"]
    report = (tmp_path / "cmp" / "results.md").read_text()
    assert "## toy_colours" in report and "| toy |" in report
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_model_dir), "--task", "toy_colours", "--steps", "2",
                 "--batch-size", "2", "--eval-size", "2", "--max-new-tokens", "4", "--threads", "1",
                 "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["test_inputs"] == 2 and all(g["input"].startswith("thing[") for g in summary["generations"])
