"""``qaa adapter info`` and ``qaa adapter extract`` on a saved tiny-model adapter."""
import json

import pytest
import torch
from safetensors.torch import load_file

import qaa
from qaa.experiments.cli import main
from support import tiny_llama


@pytest.fixture
def saved(tmp_path):
    model, _ = tiny_llama(hidden=32, layers=1)
    qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=2, seed=0))
    folder = tmp_path / "adapter"
    qaa.save_adapter(model, str(folder))
    trainable = sum(p.numel() for n, p in model.named_parameters() if "qaa_" in n and p.requires_grad)
    return folder, trainable


def test_info_reports_the_config_and_counts_with_checksums_verified(saved, capsys):
    folder, trainable = saved
    assert main(["adapter", "info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] and info["trainable_params"] == trainable
    assert info["modules"] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    assert info["config"]["n_layers"] == 2 and info["config"]["target_modules"] == ["q_proj", "v_proj"]
    assert main(["adapter", "info", str(folder)]) == 0
    assert f"{trainable:,} trainable parameters" in capsys.readouterr().out


def test_info_refuses_a_corrupted_or_missing_folder(saved, tmp_path, capsys):
    folder, _ = saved
    weights = folder / "adapter_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped byte in the tensor data
    weights.write_bytes(bytes(blob))
    assert main(["adapter", "info", str(folder)]) == 2
    assert "qaa adapter: error:" in capsys.readouterr().err
    assert main(["adapter", "info", str(tmp_path / "nowhere")]) == 2
    assert "no such adapter folder" in capsys.readouterr().err


def test_extract_writes_the_same_tensors_and_refuses_a_non_empty_output(saved, tmp_path, capsys):
    folder, _ = saved
    out = tmp_path / "out"
    assert main(["adapter", "extract", str(folder), str(out)]) == 0
    a, b = load_file(str(folder / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["adapter", "extract", str(folder), str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
