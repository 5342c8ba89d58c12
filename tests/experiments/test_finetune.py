"""``qaa finetune`` end to end on the tiny model: the comparison's split rule, every generation kept."""
import json

import pytest

from qaa.experiments.cli import main
from qaa.experiments.data import split_three
from support import fake_examples

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def test_finetune_uses_the_three_way_split_and_keeps_every_generation(tiny_model_dir, fake_tasks, tmp_path):
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_model_dir), "--steps", "2", "--batch-size", "2", "--eval-size", "2",
                 "--max-new-tokens", "4", "--threads", "1", "--no-progress", "--split-seed", "3", "--seed", "1",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    train, val, test = split_three(fake_examples("e2e"), split_seed=3, val_fraction=0.1, test_fraction=0.2)
    assert [g["input"] for g in summary["generations"]] == [e.input for e in test[:2]]
    assert summary["train_inputs"] == len(train) and summary["test_inputs"] == 2
    assert summary["split_seed"] == 3 and summary["training_seed"] == 1 and summary["config"]["seed"] == 1
    assert all(isinstance(g["qaa"], str) and isinstance(g["base"], str) for g in summary["generations"])
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "losses.csv").is_file()


def test_finetune_eval_size_beyond_the_test_split_is_an_error(tiny_model_dir, fake_tasks, tmp_path, capsys):
    assert main(["finetune", "--model", str(tiny_model_dir), "--eval-size", "50", "--no-progress",
                 "--out", str(tmp_path / "ft")]) == 2
    assert "--eval-size 50 exceeds the 2 test inputs" in capsys.readouterr().err
