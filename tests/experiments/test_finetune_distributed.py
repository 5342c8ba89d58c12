"""``qaa finetune`` with data parallelism (torchrun, DDP over gloo, 2 processes) and gradient accumulation: the
same batch numerics as one process."""
import os

import pytest
import torch
from safetensors.torch import load_file

from qaa.experiments.cli import main
from support import torchrun

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _options(model_dir, out, *extra):
    return ["--model", str(model_dir), "--steps", "3", "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "1",
            "--eval-size", "1", "--max-new-tokens", "2", "--threads", "1", "--no-progress", "--out", str(out), *extra]


def _adapter(out):
    return load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))


def _close(a, b, tol):
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= tol, key


def test_ddp_and_grad_accum_match_one_process(tiny_model_dir, fake_tasks, tmp_path):
    assert main(["finetune", *_options(tiny_model_dir, tmp_path / "one")]) == 0
    assert main(["finetune", *_options(tiny_model_dir, tmp_path / "accum", "--grad-accum", "2")]) == 0
    worker = os.path.join(os.path.dirname(__file__), "finetune_worker.py")
    proc = torchrun([worker, *_options(tiny_model_dir, tmp_path / "ddp", "--grad-accum", "2", "--device", "cpu")])
    assert proc.returncode == 0, proc.stderr[-4000:]
    one = _adapter(tmp_path / "one")
    assert any(v.abs().max() > 0 for k, v in one.items() if k.endswith("out_proj.weight"))  # it trained
    _close(_adapter(tmp_path / "accum"), one, 1e-6)
    _close(_adapter(tmp_path / "ddp"), one, 1e-6)
    assert (tmp_path / "ddp" / "results.json").is_file() and (tmp_path / "ddp" / "losses.csv").is_file()


def test_batch_not_divisible_by_accumulation_is_an_error(tiny_model_dir, fake_tasks, tmp_path, capsys):
    assert main(["finetune", *_options(tiny_model_dir, tmp_path / "x", "--grad-accum", "3")]) == 2
    assert "--batch-size 4 must be a multiple of processes x --grad-accum (1 x 3)" in capsys.readouterr().err


def test_grad_accum_1_is_the_single_batch_step(tiny_model_dir):
    from qaa import QAAConfig, attach
    from qaa.experiments.train import TrainConfig, train
    from support import tiny_llama

    results = []
    for kw in ({}, {"grad_accum": 1}):
        model, tok = tiny_llama()
        attach(model, QAAConfig(n_layers=2, seed=0))
        enc = [([5, 6, 7, 8, 9, 10, 11], [-100, -100, -100, 8, 9, 10, 11]), ([12, 13, 14, 15], [-100, 13, 14, 15])]
        cfg = TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup_steps=1, max_length=8)
        res = train(model, tok, enc, cfg, progress=False, **kw)
        results.append((res.losses, [p.detach().clone() for p in model.parameters() if p.requires_grad]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
