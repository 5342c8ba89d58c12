"""qaa hardware-cost: circuit, shot and time counts computed by hand for a tiny Llama."""
import json

import pytest
import torch

import qaa
from qaa.experiments.cli import main
from qaa.experiments.hardware_cost import DeviceRates, Workload, hardware_cost
from support import tiny_llama


def test_counts_by_hand():
    model, _ = tiny_llama(hidden=32, layers=2)   # q_proj 32 -> 32, v_proj 32 -> 16 (2 kv heads x 8)
    cfg = qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=3)
    w = Workload(test_inputs=10, tokens_per_test_input=7, train_sequences=4, tokens_per_train_sequence=5, shots=100)
    rates = DeviceRates(shots_per_second=1000.0, latency_per_circuit_s=0.5)
    rep = hardware_cost(model, cfg, w, rates)
    assert rep["circuits_per_token"] == 4          # 2 decoder layers x (q_proj, v_proj)
    assert {layer["n_qubits"] for layer in rep["layers"]} == {5}     # d_in = 32 -> 5 qubits
    assert all(layer["n_params"] == 15 for layer in rep["layers"])   # L * n
    # state preparation 2^5 - 1 RY and 2^5 - 2 CNOT, ansatz 3 * 5 RY and 3 * 5 CNOT
    assert rep["layers"][0]["gates_per_circuit"] == {"cx": 30 + 15, "ry": 31 + 15}
    score = rep["score"]
    assert score["tokens"] == 70 and score["circuits"] == 280 and score["shots"] == 28000
    assert score["seconds"] == pytest.approx(280 * 0.5 + 28000 / 1000.0)
    train = rep["train_epoch"]
    assert train["tokens"] == 20 and train["circuits"] == 20 * 4 * (1 + 2 * 15)
    assert train["seconds"] == pytest.approx(train["circuits"] * 0.5 + train["circuits"] * 100 / 1000.0)
    json.dumps(rep)
    assert qaa.hardware_cost is hardware_cost
    assert not list(qaa.qaa_layers(model))       # the model is not changed


@pytest.mark.parametrize("kw", [{"shots": 0}, {"shots": -1}, {"test_inputs": -1}, {"tokens_per_test_input": 1.5}])
def test_bad_workload(kw):
    with pytest.raises(ValueError):
        Workload(**kw)


@pytest.mark.parametrize("kw", [{"shots_per_second": 0}, {"latency_per_circuit_s": -1.0},
                                {"shots_per_second": float("inf")}])
def test_bad_rates(kw):
    with pytest.raises(ValueError):
        DeviceRates(**kw)


def test_cli(tmp_path, capsys):
    model, _ = tiny_llama(hidden=32, layers=2)
    model.save_pretrained(tmp_path / "m")
    out = tmp_path / "cost.json"
    rc = main(["hardware-cost", "--model", str(tmp_path / "m"), "--test-inputs", "3", "--tokens-per-input", "2",
               "--shots", "10", "--latency", "0", "--shots-per-second", "20", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["score"]["circuits"] == 3 * 2 * 4 and rep["score"]["seconds"] == pytest.approx(24 * 10 / 20)
    assert "circuits per token): 4" in capsys.readouterr().out
    assert main(["hardware-cost", "--model", str(tmp_path / "m"), "--shots", "0"]) == 2
    assert "shots must be" in capsys.readouterr().err
    assert main(["hardware-cost", "--model", str(tmp_path / "m"), "--target-modules", "nope"]) == 2
