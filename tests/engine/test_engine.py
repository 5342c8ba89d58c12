"""Engine correctness through the torch API: PennyLane parity, gradcheck, paths, edge rows."""
import math

import numpy as np
import pytest
import torch

import qaa
from qaa import engine

pennylane = pytest.importorskip("pennylane")
qml = pennylane


def pennylane_readout(circ, theta, x, kind):
    """Reference: PennyLane default.qubit with AmplitudeEmbedding(normalize=True, pad_with=0.0)."""
    n = circ.n_qubits
    dev = qml.device("default.qubit", wires=n)
    th = theta.detach().numpy()

    @qml.qnode(dev)
    def node(v):
        qml.AmplitudeEmbedding(v, wires=range(n), normalize=True, pad_with=0.0)
        for name, w0, w1, p in circ.gates:
            if name == "RY":
                qml.RY(th[p], wires=w0)
            elif name == "RZ":
                qml.RZ(th[p], wires=w0)
            elif name == "RX":
                qml.RX(th[p], wires=w0)
            elif name == "CNOT":
                qml.CNOT(wires=[w0, w1])
            elif name == "CZ":
                qml.CZ(wires=[w0, w1])
        if kind == "z":
            return [qml.expval(qml.PauliZ(q)) for q in range(n)]
        return qml.probs(wires=range(n))

    return np.array([np.asarray(node(v.numpy())) for v in x.detach()])


def random_circuit(n, depth, rng):
    c = engine.Circuit(n)
    p = 0
    for _ in range(depth):
        kind = rng.choice(["RX", "RY", "RZ", "CNOT", "CZ"])
        if kind in ("CNOT", "CZ"):
            if n < 2:
                continue
            a, b = rng.choice(n, 2, replace=False)
            c.add_two_qubit(kind, int(a), int(b))
        else:
            c.add_rotation(kind, int(rng.integers(n)), p)
            p += 1
    return c


@pytest.mark.parametrize("ansatz", ["ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"])
@pytest.mark.parametrize("kind", ["z", "probs"])
@pytest.mark.parametrize("n,d", [(3, 8), (4, 11), (5, 19)])
def test_matches_pennylane(ansatz, kind, n, d):
    circ = engine.build_circuit(ansatz, n, 3)
    g = torch.Generator().manual_seed(n * 100 + d)
    theta = torch.randn(circ.n_params, dtype=torch.float64, generator=g)
    x = torch.randn(4, d, dtype=torch.float64, generator=g)
    ours, norms = engine.forward_features(circ, theta, x, kind)
    ref = pennylane_readout(circ, theta, x, kind)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(norms.numpy(), np.linalg.norm(x.numpy(), axis=1), rtol=1e-14)


@pytest.mark.parametrize("n,layers", [(1, 2), (2, 1), (4, 3)])
def test_ry_layers_is_the_product_circuit_in_pennylane(n, layers):
    """ry_layers against PennyLane built from its definition (not from the engine's gate list): per layer
    RY(theta[l*n+q]) on every wire, no entangler. Its <Z_q> depends only on the summed angle of wire q."""
    circ = engine.build_circuit("ry_layers", n, layers)
    assert circ.n_params == layers * n and circ.is_real
    assert all(name == "RY" for name, *_ in circ.gates)
    g = torch.Generator().manual_seed(10 * n + layers)
    theta = torch.randn(circ.n_params, dtype=torch.float64, generator=g)
    x = torch.randn(5, 2 ** n, dtype=torch.float64, generator=g)
    th = theta.numpy()
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev)
    def node(v):
        qml.AmplitudeEmbedding(v, wires=range(n), normalize=True, pad_with=0.0)
        for l in range(layers):
            for q in range(n):
                qml.RY(th[l * n + q], wires=q)
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    ref = np.array([np.asarray(node(v.numpy())) for v in x]).reshape(5, n)
    ours, _ = engine.forward_features(circ, theta, x, "z")
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10, rtol=0)
    # RYs on one wire compose: the same readout as one layer with the per-wire angle sums
    one = engine.build_circuit("ry_layers", n, 1)
    summed, _ = engine.forward_features(one, theta.view(layers, n).sum(0), x, "z")
    np.testing.assert_allclose(ours.numpy(), summed.numpy(), atol=1e-12, rtol=0)


def test_random_circuits_match_pennylane():
    rng = np.random.default_rng(7)
    for trial in range(4):
        circ = random_circuit(4, 25, rng)
        theta = torch.tensor(rng.normal(size=circ.n_params))
        x = torch.tensor(rng.normal(size=(3, 13)))
        ours, _ = engine.forward_features(circ, theta, x, "z")
        np.testing.assert_allclose(ours.numpy(), pennylane_readout(circ, theta, x, "z"), atol=1e-10)


@pytest.mark.parametrize("ansatz", ["ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"])
@pytest.mark.parametrize("kind", ["z", "probs"])
def test_gradcheck_theta_and_x(ansatz, kind):
    circ = engine.build_circuit(ansatz, 3, 2)
    theta = torch.randn(circ.n_params, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)

    def f(x_, th_):
        feats, norms = qaa.qaa_features(x_, th_, circ, kind)
        return feats, norms

    assert torch.autograd.gradcheck(f, (x, theta), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_state_level_api_composes_to_fused_forward():
    circ = engine.build_circuit("ry_rz_ring_ry", 4, 2)
    theta = torch.randn(circ.n_params, dtype=torch.float64)
    x = torch.randn(6, 16, dtype=torch.float64)
    psi0, norms = engine.embed(x, 4)
    psi = engine.apply(circ, theta, psi0)
    feats = engine.readout(psi, "z")
    fused, fused_norms = engine.forward_features(circ, theta, x, "z")
    torch.testing.assert_close(feats, fused, atol=1e-13, rtol=0)
    torch.testing.assert_close(norms, fused_norms)
    # the adjoint inverts
    back = engine.apply(circ, theta, psi, adjoint=True)
    torch.testing.assert_close(back, psi0, atol=1e-13, rtol=0)
    # circuit matrix: psi = U psi0
    u = engine.circuit_matrix(circ, theta)
    torch.testing.assert_close(psi0 @ u.T, psi, atol=1e-13, rtol=0)


def test_state_level_vjp_matches_finite_differences():
    circ = engine.build_circuit("ry_rz_ring_ry", 3, 2)
    theta = torch.randn(circ.n_params, dtype=torch.float64)
    psi0 = torch.randn(4, 8, dtype=torch.float64)
    g = torch.randn(4, 3, dtype=torch.float64)
    psi = engine.apply(circ, theta, psi0.to(torch.complex128))
    grad_theta, grad_psi0 = engine.vjp(circ, theta, psi, g, "z")
    # independent: finite differences of the loss through the state-level API
    def loss(th, p0):
        feats = engine.readout(engine.apply(circ, th, p0.to(torch.complex128)), "z")
        return float((feats * g).sum())
    eps = 1e-6
    fd = torch.tensor([(loss(theta + eps * e, psi0) - loss(theta - eps * e, psi0)) / (2 * eps)
                       for e in torch.eye(circ.n_params, dtype=torch.float64)], dtype=torch.float64)
    torch.testing.assert_close(grad_theta, fd, atol=1e-8, rtol=1e-7)
    fdp = torch.zeros_like(psi0)
    for i in range(psi0.numel()):
        e = torch.zeros(psi0.numel(), dtype=torch.float64)
        e[i] = eps
        e = e.view_as(psi0)
        fdp.view(-1)[i] = (loss(theta, psi0 + e) - loss(theta, psi0 - e)) / (2 * eps)
    torch.testing.assert_close(grad_psi0, fdp, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("ansatz", ["ry_cnot_ring", "ry_rz_ring_ry", "ry_layers"])
@pytest.mark.parametrize("kind", ["z", "probs"])
def test_dense_path_equals_state_path(ansatz, kind):
    circ = engine.build_circuit(ansatz, 5, 3)
    theta = torch.randn(circ.n_params, dtype=torch.float64)
    x = torch.randn(70, 30, dtype=torch.float64)
    a, na = engine.forward_features(circ, theta, x, kind, path="state")
    b, nb_ = engine.forward_features(circ, theta, x, kind, path="dense")
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(na, nb_)


def test_float32_close_to_float64():
    circ = engine.build_circuit("ry_cnot_ring", 10, 4)
    theta = torch.randn(circ.n_params, dtype=torch.float64)
    x = torch.randn(64, 576, dtype=torch.float64)
    f64, _ = engine.forward_features(circ, theta, x, "z")
    f32, _ = engine.forward_features(circ, theta.float(), x.float(), "z")
    torch.testing.assert_close(f32.double(), f64, atol=2e-6, rtol=0)


def test_edge_rows_are_defined_and_finite():
    circ = engine.build_circuit("ry_cnot_ring", 3, 2)
    theta = torch.randn(circ.n_params, dtype=torch.float32, requires_grad=True)
    x = torch.tensor([[0.0] * 6,                                   # zero row (padding)
                      [1.0, float("nan"), 0, 0, 0, 0],              # NaN row
                      [1e30, 1e30, 0, 0, 0, 0],                     # overflows a naive norm in float32
                      [float("inf"), 0, float("-inf"), 1.0, 0, 0],  # infinite row: its limit
                      [1e-30, 2e-30, 0, 0, 0, 0]],                  # underflows a naive norm
                     requires_grad=True)
    feats, norms = qaa.qaa_features(x, theta, circ, "z")
    assert torch.isfinite(feats).all()
    assert (feats[0] == 0).all() and (feats[1] == 0).all()
    assert norms[0] == 0 and norms[1] == 0
    assert math.isclose(norms[2].item(), math.sqrt(2) * 1e30, rel_tol=1e-6)
    assert math.isinf(norms[3].item())
    assert math.isclose(norms[4].item(), math.sqrt(5) * 1e-30, rel_tol=1e-6)
    # scaled rows embed like their scale-free versions
    ref, _ = engine.forward_features(circ, theta.detach(), torch.tensor([[1.0, 1, 0, 0, 0, 0], [1, 0, -1, 0, 0, 0],
                                                                           [1, 2, 0, 0, 0, 0]]), "z")
    torch.testing.assert_close(feats[2:].detach(), ref, atol=1e-6, rtol=0)
    feats.sum().backward()
    assert torch.isfinite(theta.grad).all()
    assert (x.grad[:2] == 0).all() and (x.grad[3] == 0).all()


def test_bad_inputs_raise_clear_errors():
    circ = engine.build_circuit("ry_cnot_ring", 3, 1)
    theta = torch.zeros(circ.n_params)
    with pytest.raises(ValueError, match="theta must have shape"):
        engine.forward_features(circ, torch.zeros(5), torch.randn(2, 8))
    with pytest.raises(ValueError, match="does not fit"):
        engine.forward_features(circ, theta, torch.randn(2, 9))
    with pytest.raises(TypeError, match="same dtype"):
        engine.forward_features(circ, theta, torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        engine.forward_features(circ, theta.half(), torch.randn(2, 8).half())
    with pytest.raises(ValueError, match="unknown readout"):
        engine.forward_features(circ, theta, torch.randn(2, 8), "x")
    with pytest.raises(ValueError, match="unknown ansatz"):
        engine.build_circuit("nope", 3, 1)
    with pytest.raises(ValueError, match="n_qubits"):
        engine.build_circuit("ry_cnot_ring", 25, 1)


def test_noncontiguous_and_conjugate_inputs():
    circ = engine.build_circuit("ry_rz_ring_ry", 3, 1)
    theta = torch.randn(circ.n_params, dtype=torch.float64)
    x = torch.randn(8, 5, dtype=torch.float64)
    ref, _ = engine.forward_features(circ, theta, x, "z")
    got, _ = engine.forward_features(circ, theta, x.T.contiguous().T, "z")
    torch.testing.assert_close(got, ref)
    xt = torch.randn(5, 8, dtype=torch.float64).T  # transposed view
    torch.testing.assert_close(engine.forward_features(circ, theta, xt, "z")[0],
                               engine.forward_features(circ, theta, xt.contiguous(), "z")[0])
    psi = torch.randn(2, 8, dtype=torch.complex128)
    torch.testing.assert_close(engine.readout(psi.conj(), "probs"), engine.readout(psi.conj().resolve_conj(), "probs"))


def test_empty_batch():
    circ = engine.build_circuit("ry_cnot_ring", 3, 1)
    theta = torch.zeros(circ.n_params, requires_grad=True)
    x = torch.zeros(0, 8, requires_grad=True)
    feats, norms = qaa.qaa_features(x, theta, circ, "z")
    assert feats.shape == (0, 3) and norms.shape == (0,)
    feats.sum().backward()
    assert theta.grad is not None and (theta.grad == 0).all()
