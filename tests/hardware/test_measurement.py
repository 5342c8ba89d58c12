"""Finite shots, readout error and depolarising noise (qaa.measurement), and parameter-shift gradients.

References: the engine's exact float64 features (shots), PennyLane's density-matrix simulator default.mixed
(noise channels), the engine's adjoint gradients (parameter shift). Statistical checks use fixed seeds and a
stated tolerance of 5 standard errors, with the standard errors computed from the binomial / multinomial
moments (not from the data under test) where they are known in closed form."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import qaa
from qaa.engine import build_circuit, forward_features
from qaa.hardware import MeasurementSetting, measured_features, measurement

qml = pytest.importorskip("pennylane")

K_SE = 5.0  # tolerance of every statistical check, in standard errors


def _x(rows, d, seed):
    return torch.randn(rows, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _theta(ansatz, n, L, seed):
    P = build_circuit(ansatz, n, L).n_params
    return torch.randn(P, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ shots
def _binomial_mean_moments(p, S):
    """Variance and 4th central moment of Binomial(S, p) / S."""
    q = 1 - p
    return p * q / S, p * q * (1 + 3 * (S - 2) * p * q) / S**3


@pytest.mark.parametrize("kind", ["probs", "z"])
def test_shots_are_unbiased_with_binomial_variance(kind):
    n, L, S, R = 3, 2, 64, 4000
    x = _x(1, 7, 1)
    theta = _theta("ry_rz_ring_ry", n, L, 2)
    exact, _ = forward_features(build_circuit("ry_rz_ring_ry", n, L), theta, x, kind, path="state")
    exact = exact[0].numpy()
    est = measured_features(x.repeat(R, 1), theta, "ry_rz_ring_ry", n, L, kind,
                            MeasurementSetting(shots=S, seed=1234)).numpy()
    # every estimate is a multiple of 1/S (probs) or 2/S (z)
    grid = est * S if kind == "probs" else (1 - est) * S / 2
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-9)
    p = exact if kind == "probs" else (1 - exact) / 2      # P(bit = 1) for z
    scale = 1.0 if kind == "probs" else 2.0                # z = 1 - 2 * (ones / S)
    var, mu4 = _binomial_mean_moments(p, S)
    var, mu4 = var * scale**2, mu4 * scale**4
    mean_err = np.abs(est.mean(0) - exact)
    assert (mean_err <= K_SE * np.sqrt(var / R) + 1e-12).all(), (mean_err, np.sqrt(var / R))
    s2 = est.var(0, ddof=1)
    se_s2 = np.sqrt(np.maximum(mu4 - var**2 * (R - 3) / (R - 1), 0) / R)
    assert (np.abs(s2 - var) <= K_SE * se_s2 + 1e-12).all(), (s2, var, se_s2)


def test_shots_are_seeded_and_rows_without_state_stay_zero():
    x = torch.cat([_x(3, 4, 0), torch.zeros(1, 4, dtype=torch.float64)])
    theta = _theta("ry_cnot_ring", 2, 2, 0)
    s = MeasurementSetting(shots=100, seed=7)
    a = measured_features(x, theta, "ry_cnot_ring", 2, 2, "probs", s)
    b = measured_features(x, theta, "ry_cnot_ring", 2, 2, "probs", s)
    c = measured_features(x, theta, "ry_cnot_ring", 2, 2, "probs", MeasurementSetting(shots=100, seed=8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[3], torch.zeros(4, dtype=torch.float64))
    np.testing.assert_allclose(a[:3].sum(1).numpy(), 1.0, atol=1e-12)


# ------------------------------------------------------------------------------------------ noise
def _paulis(n):
    mats = [np.eye(2), np.array([[0, 1], [1, 0]]), np.array([[0, -1j], [1j, 0]]), np.diag([1.0, -1.0])]
    out = []
    for idx in itertools.product(range(4), repeat=n):
        m = np.array([[1.0]])
        for i in idx:
            m = np.kron(m, mats[i])
        out.append(m)
    return out


def _mixed_reference(ansatz, n, L, theta, x, p_depol, model, r_readout):
    """default.mixed: the engine's gates, depolarising after each layer, bit flips before measuring."""
    dev = qml.device("default.mixed", wires=n)
    gates = build_circuit(ansatz, n, L).gates
    per = len(gates) // L
    N = 2**n
    kraus = None
    if model == "global":
        ps = _paulis(n)
        kraus = [math.sqrt(1 - p_depol + p_depol / N**2) * ps[0]] + [math.sqrt(p_depol / N**2) * P for P in ps[1:]]

    @qml.qnode(dev)
    def circuit():
        qml.AmplitudeEmbedding(x, wires=range(n), normalize=True, pad_with=0.0)
        for i, (name, w0, w1, param) in enumerate(gates):
            if name == "CNOT":
                qml.CNOT(wires=[w0, w1])
            else:
                {"RX": qml.RX, "RY": qml.RY, "RZ": qml.RZ}[name](float(theta[param]), wires=w0)
            if (i + 1) % per == 0 and p_depol > 0:
                if model == "global":
                    qml.QubitChannel(kraus, wires=range(n))
                else:
                    for w in range(n):
                        qml.DepolarizingChannel(p_depol, wires=w)
        for w in range(n):
            if r_readout > 0:
                qml.BitFlip(r_readout, wires=w)
        return [qml.expval(qml.PauliZ(w)) for w in range(n)] + [qml.probs(wires=range(n))]

    res = circuit()
    return np.array([float(v) for v in res[:n]]), np.asarray(res[n], dtype=float)


@pytest.mark.parametrize("ansatz, n", [("ry_cnot_ring", 2), ("ry_rz_ring_ry", 3), ("ry_layers", 2)])
@pytest.mark.parametrize("p, r", [(0.1, 0.0), (0.0, 0.07), (0.05, 0.03)])
def test_global_depolarising_and_readout_error_match_default_mixed(ansatz, n, p, r):
    L = 2
    x = _x(1, 2**n - 1, 3)
    theta = _theta(ansatz, n, L, 4)
    s = MeasurementSetting(depolarizing=p, readout_error=r)
    z = measured_features(x, theta, ansatz, n, L, "z", s)[0].numpy()
    probs = measured_features(x, theta, ansatz, n, L, "probs", s)[0].numpy()
    z_ref, probs_ref = _mixed_reference(ansatz, n, L, theta.numpy(), x[0].numpy(), p, "global", r)
    np.testing.assert_allclose(z, z_ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(probs, probs_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("ansatz, n, r", [("ry_cnot_ring", 3, 0.0), ("ry_rz_ring_ry", 2, 0.05)])
def test_local_depolarising_by_trajectories_matches_default_mixed(ansatz, n, r):
    L, p, T = 2, 0.15, 6000
    x = _x(1, 2**n, 5)
    theta = _theta(ansatz, n, L, 6)
    s = MeasurementSetting(depolarizing=p, depolarizing_model="local", trajectories=T, readout_error=r, seed=11)
    z = measured_features(x, theta, ansatz, n, L, "z", s)[0].numpy()
    probs = measured_features(x, theta, ansatz, n, L, "probs", s)[0].numpy()
    z_ref, probs_ref = _mixed_reference(ansatz, n, L, theta.numpy(), x[0].numpy(), p, "local", r)
    # a trajectory's probability lies in [0, 1] and its <Z> in [-1, 1]: variance <= q (1 - q), resp. 1 - z^2
    assert (np.abs(probs - probs_ref) <= K_SE * np.sqrt(probs_ref * (1 - probs_ref) / T) + 1e-12).all()
    assert (np.abs(z - z_ref) <= K_SE * np.sqrt((1 - z_ref**2) / T) + 1e-12).all()
    # local depolarising is no global rescaling: the best single factor leaves a residual far above the error
    z_exact, _ = forward_features(build_circuit(ansatz, n, L), theta, x, "z", path="state")
    z_exact = z_exact[0].numpy() * (1 - 2 * r)
    f = z_ref @ z_exact / (z_exact @ z_exact)
    assert np.abs(z_ref - f * z_exact).max() > 1e-3


def test_local_trajectories_without_noise_are_exact():
    x = _x(2, 8, 0)
    theta = _theta("ry_rz_ring_ry", 3, 2, 1)
    s = MeasurementSetting(depolarizing=0.0, depolarizing_model="local", trajectories=3)
    got = qaa.hardware.local_depolarized_probs(x, theta, "ry_rz_ring_ry", 3, 2, 0.0, 3, np.random.default_rng(0))
    ref, _ = forward_features(build_circuit("ry_rz_ring_ry", 3, 2), theta, x, "probs", path="state")
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-13)
    assert s.is_exact


def test_trajectories_that_drew_no_error_are_simulated_once_without_changing_the_estimate():
    """The estimator groups the error-free trajectories into one noiseless run per input; it must equal the
    plain average over every trajectory simulated one by one with the same drawn Paulis (float64, 1e-13)."""
    from qaa.engine import state
    from qaa.hardware.noise import _apply_paulis, _draw_paulis, _layer_circuit

    ansatz, n, L, p, T = "ry_rz_ring_ry", 3, 2, 0.08, 40
    x = _x(3, 2**n, 7)
    theta = _theta(ansatz, n, L, 8).to(torch.float64)
    got = qaa.hardware.local_depolarized_probs(x, theta, ansatz, n, L, p, T, np.random.default_rng(3))
    codes = _draw_paulis(3 * T, n, L, p, np.random.default_rng(3))  # the same draw, one chunk
    assert 0 < codes.reshape(-1, 3 * T).any(axis=0).sum() < 3 * T  # both kinds of trajectory occur
    layer, per = _layer_circuit(ansatz, n, L)
    psi, _ = state.embed(x.to(torch.float64), n)
    psi = psi.repeat_interleave(T, dim=0)
    for l in range(L):
        psi = state.apply(layer, theta[l * per:(l + 1) * per], psi)
        psi = _apply_paulis(psi, n, codes[l])
    ref = (psi.abs() ** 2).view(3, T, 2**n).mean(dim=1)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-13, rtol=0)


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("kind", ["z", "probs"])
@pytest.mark.parametrize("p, r", [(0.0, 0.0), (0.05, 0.02)])
def test_parameter_shift_equals_adjoint_without_shots(kind, p, r):
    n, L = 3, 2
    x = _x(4, 6, 0).requires_grad_(True)
    theta = _theta("ry_rz_ring_ry", n, L, 1).requires_grad_(True)
    w = _x(4, n if kind == "z" else 2**n, 2)
    grads = []
    for gradient in ("adjoint", "parameter_shift"):
        s = MeasurementSetting(depolarizing=p, readout_error=r, gradient=gradient)
        f = measured_features(x, theta, "ry_rz_ring_ry", n, L, kind, s)
        grads.append(torch.autograd.grad((f * w).sum(), [theta, x]))
    np.testing.assert_allclose(grads[1][0].numpy(), grads[0][0].numpy(), atol=1e-10, rtol=0)
    np.testing.assert_allclose(grads[1][1].numpy(), grads[0][1].numpy(), atol=1e-12, rtol=0)
    # and the adjoint one is the closed-form noisy expectation's gradient
    exact, _ = qaa.qaa_features(x, theta, build_circuit("ry_rz_ring_ry", n, L), "z")
    if kind == "z":
        g_ref = torch.autograd.grad((exact * w).sum() * (1 - p) ** L * (1 - 2 * r), theta)[0]
        np.testing.assert_allclose(grads[0][0].numpy(), g_ref.numpy(), atol=1e-12)


def test_parameter_shift_with_shots_is_unbiased():
    n, L, S, R = 2, 2, 200, 300
    x = _x(2, 4, 3)
    theta0 = _theta("ry_cnot_ring", n, L, 4)
    w = _x(2, n, 5)
    theta = theta0.clone().requires_grad_(True)
    exact, _ = qaa.qaa_features(x, theta, build_circuit("ry_cnot_ring", n, L), "z")
    g_adjoint = torch.autograd.grad((exact * w).sum(), theta)[0].numpy()
    est = []
    with measurement(shots=S, seed=99, gradient="parameter_shift") as run:
        for _ in range(R):
            theta = theta0.clone().requires_grad_(True)
            f = run.features(x, theta, "ry_cnot_ring", n, L, "z")
            est.append(torch.autograd.grad((f * w).sum(), theta)[0].numpy())
    est = np.array(est)
    se = est.std(0, ddof=1) / math.sqrt(R)
    assert (np.abs(est.mean(0) - g_adjoint) <= K_SE * se).all(), (est.mean(0), g_adjoint, se)
    assert (est.std(0) > 0).all()
    P = theta0.shape[0]
    assert run.circuits == R * 2 * (1 + 2 * P) and run.shots_used == run.circuits * S


# ------------------------------------------------------------------------------------------ in a model
def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    qaa.attach(model, qaa.QAAConfig(target_modules=["0", "2"], seed=0, init_std=1.0, dtype="float64"))
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            layer.qaa_out["default"].weight.normal_()
    return model.double()


def test_layers_follow_the_measurement_setting():
    model = _model()
    x = _x(5, 6, 0)
    with torch.no_grad():
        exact = model(x)
        with measurement() as run:           # the exact setting changes nothing
            assert torch.allclose(model(x), exact, atol=1e-12, rtol=0)
        with qaa.shots(100, seed=3) as run:
            a = model(x)
        with qaa.shots(100, seed=3):
            b = model(x)
        with qaa.shots(10**7, seed=3):
            big = model(x)
    assert torch.equal(a, b) and not torch.allclose(a, exact, atol=1e-3)
    assert torch.allclose(big, exact, atol=5e-3)
    assert run.circuits == 2 * 5 and run.shots_used == 2 * 5 * 100
    assert qaa.hardware.active_measurement() is None
    out, run = qaa.evaluate_under(model, MeasurementSetting(shots=50, seed=1), lambda m: m(x))
    assert out.shape == (5, 3) and run.circuits == 10 and model.training


def test_training_step_under_shots_and_noise_runs():
    model = _model()
    x = _x(5, 6, 0)
    with measurement(shots=100, seed=0, depolarizing=0.01, gradient="parameter_shift"):
        model(x).pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    with measurement(depolarizing=0.01, depolarizing_model="local"):
        with pytest.raises(RuntimeError, match="forward only"):
            model(x)
        with torch.no_grad():
            assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("fields, match", [
    ({"shots": 0}, "shots"), ({"shots": -5}, "shots"), ({"shots": 2.5}, "shots"), ({"shots": True}, "shots"),
    ({"readout_error": 1.5}, "readout_error"), ({"readout_error": -0.1}, "readout_error"),
    ({"depolarizing": 2.0}, "depolarizing"), ({"depolarizing": float("nan")}, "depolarizing"),
    ({"trajectories": 0}, "trajectories"), ({"gradient": "finite"}, "gradient"),
    ({"depolarizing_model": "pauli"}, "depolarizing_model"), ({"seed": -1}, "seed"),
])
def test_bad_settings_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        MeasurementSetting(**fields)
    with pytest.raises(ValueError, match=match):
        with measurement(**fields):
            pass
    assert qaa.hardware.active_measurement() is None
    if "shots" in fields:
        with pytest.raises(ValueError, match="shots"):
            qaa.shots(fields["shots"])
