"""OpenQASM 3 export, checked by an independent importer and simulator: Qiskit's OpenQASM 3 importer
(qiskit.qasm3.loads, with qiskit-qasm3-import) and qiskit.quantum_info.Statevector must reproduce the engine's
features to 1e-10 in float64, for every ansatz and readout at n = 1..10."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import qaa
from qaa.engine import build_circuit, forward_features
from qaa.hardware.export import amplitude_preparation

qasm3 = pytest.importorskip("qiskit.qasm3")
pytest.importorskip("qiskit_qasm3_import")
from qiskit.quantum_info import Pauli, Statevector  # noqa: E402

TOL = 1e-10


def _simulate(text: str, initial: np.ndarray = None) -> Statevector:
    """Qiskit's state after the program (final measurements removed); ``initial`` in qaa's order (wire 0 = MSB)."""
    qc = qasm3.loads(text)
    qc.remove_final_measurements()
    if initial is None:
        return Statevector(qc)
    # qiskit indexes basis states with qubit 0 least significant: reverse_qargs maps qaa wire w to qubit w
    return Statevector(initial.astype(complex)).reverse_qargs().evolve(qc)


def _features(sv: Statevector, n: int, kind: str) -> np.ndarray:
    if kind == "z":
        return np.array([sv.expectation_value(Pauli("Z"), [w]).real for w in range(n)])
    return sv.reverse_qargs().probabilities()  # index k with qubit 0 (wire 0) the most significant bit


def _model(d_in: int, ansatz: str, readout: str, seed: int, n_layers: int = 2, **kw) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d_in, 3))
    return qaa.attach(model, qaa.QAAConfig(target_modules=["0"], ansatz=ansatz, readout=readout, n_layers=n_layers,
                                           init_std=1.0, seed=seed, dtype="float64", **kw))


@pytest.mark.parametrize("n", range(1, 11))
def test_amplitude_preparation_matches_the_engine_embedding(n):
    rng = np.random.default_rng(n)
    d = 2 ** n - (1 if n > 1 else 0)      # padding at the end
    x = rng.normal(size=d)
    x[rng.integers(d)] = 0.0               # a zero amplitude inside
    gates = amplitude_preparation(x, n)
    assert sum(g[0] == "ry" for g in gates) == 2 ** n - 1 and sum(g[0] == "cx" for g in gates) == 2 ** n - 2
    text = qaa.hardware.export.openqasm_program(n, [], preparation=gates)
    sv = _simulate(text).reverse_qargs().data            # qaa order
    psi0, _ = qaa.engine.embed(torch.tensor(x).unsqueeze(0), n)
    np.testing.assert_allclose(sv, psi0[0].numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("ansatz", ["ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"])
@pytest.mark.parametrize("n", range(1, 11))
def test_export_round_trip(tmp_path, ansatz, n):
    """Every ansatz at n = 1..10 qubits: the U(theta) program applied to the embedded state, and the complete
    program with the state preparation, give the engine's features for both readouts to 1e-10."""
    d_in = max(2 ** n - 3, 2 ** (n - 1) + 1) if n > 1 else 2
    model = _model(d_in, ansatz, "z", seed=n)
    layer = model[0]
    x = torch.randn(2, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + n))
    out = qaa.export_openqasm(model, tmp_path / "export", inputs=x)
    manifest = json.loads((out / qaa.hardware.export.MANIFEST).read_text())
    (entry,) = manifest["layers"]
    assert entry["n_qubits"] == n and entry["ansatz"] == ansatz and entry["readout"] == "z"
    assert manifest["adapter"] == "default" and "most significant" in manifest["embedding"]["wire_order"]
    theta = layer.qaa_theta["default"].detach()
    assert entry["theta"] == theta.tolist()
    circuit = build_circuit(ansatz, n, 2)
    u_text = (out / entry["program"]).read_text()
    for kind in ("z", "probs"):
        expected, _ = forward_features(circuit, theta, x, kind, path="state")
        for i in range(2):
            psi0, _ = qaa.engine.embed(x[i:i + 1], n)
            sv_u = _simulate(u_text, psi0[0].real.numpy())
            np.testing.assert_allclose(_features(sv_u, n, kind), expected[i].numpy(), atol=TOL, rtol=0)
            sv_full = _simulate((out / entry["inputs"][i]["program"]).read_text())
            np.testing.assert_allclose(_features(sv_full, n, kind), expected[i].numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(entry["inputs"][1]["expected_features"],
                               forward_features(circuit, theta, x, "z", path="state")[0][1].numpy(), atol=1e-15)


def test_export_with_input_transform_and_two_layers(tmp_path):
    """A standardised input is embedded after its transform; a model with two adapted layers writes two programs,
    and a trained float32 adapter exports its angles exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    qaa.attach(model, qaa.QAAConfig(target_modules=["0", "1"], readout="probs", input_transform="standardize",
                                    seed=1, init_std=1.0))
    mean = torch.linspace(-0.5, 0.5, 6)
    scale = torch.linspace(0.5, 2.0, 6)
    model[0].qaa_input["default"].set_statistics(mean, scale)
    xs = {"0": torch.randn(1, 6, dtype=torch.float64), "1": torch.randn(1, 5, dtype=torch.float64)}
    out = qaa.export_openqasm(model, tmp_path / "e", inputs=xs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["name"] for e in manifest["layers"]] == ["0", "1"]
    e0 = manifest["layers"][0]
    assert e0["input_transform"]["kind"] == "standardize"
    assert e0["theta"] == model[0].qaa_theta["default"].detach().double().tolist()
    xin = (xs["0"] - mean.double()) / scale.double()
    theta = model[0].qaa_theta["default"].detach().double()
    expected, _ = forward_features(build_circuit("ry_cnot_ring", 3, 4), theta, xin, "probs", path="state")
    sv = _simulate((out / e0["inputs"][0]["program"]).read_text())
    np.testing.assert_allclose(_features(sv, 3, "probs"), expected[0].numpy(), atol=TOL, rtol=0)
    e1 = manifest["layers"][1]
    assert e1["input_transform"]["calibrated"] is False and e1["input_transform"]["scale"] == [1.0] * 5
    assert e0["input_transform"]["calibrated"] is True


def _listing(path):
    return sorted(p.name for p in path.iterdir())


def test_bad_export_requests_write_nothing(tmp_path):
    model = _model(4, "ry_cnot_ring", "z", seed=0)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    before = _listing(tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        qaa.export_openqasm(model, full)
    with pytest.raises(ValueError, match="has no layers"):
        qaa.export_openqasm(model, tmp_path / "a", adapter="other")
    with pytest.raises(ValueError, match="no QAA layers"):
        qaa.export_openqasm(nn.Sequential(nn.Linear(4, 2)), tmp_path / "b")
    with pytest.raises(ValueError, match="width"):
        qaa.export_openqasm(model, tmp_path / "c", inputs=torch.randn(2, 5))
    with pytest.raises(ValueError, match="all zero"):
        qaa.export_openqasm(model, tmp_path / "d", inputs=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="NaN"):
        qaa.export_openqasm(model, tmp_path / "d", inputs=torch.tensor([[1.0, math.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="unknown|does not have"):
        qaa.export_openqasm(model, tmp_path / "e", inputs={"nope": torch.randn(1, 4)})
    assert _listing(tmp_path) == before and _listing(full) == ["keep.txt"]
    # an existing empty folder is filled
    empty = tmp_path / "empty"
    empty.mkdir()
    qaa.export_openqasm(model, empty)
    assert _listing(empty) == ["0.qasm", "manifest.json"]


def test_export_folder_gets_the_normal_mode(tmp_path):
    import os
    import stat

    model = _model(4, "ry_layers", "probs", seed=0)
    out = qaa.export_openqasm(model, tmp_path / "m")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary folder left
