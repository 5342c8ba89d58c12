"""Measurement settings: finite shots, readout error and depolarising noise for QAA features (docs/design.md §9).

By default a QAA layer reads its features exactly from the statevector (``<Z_q>`` or ``|psi_k|^2`` to machine
precision). Inside ``with qaa.measurement(setting):`` (or ``with qaa.shots(n, seed):``) every QAA layer reads
them as a device would under ``setting``:

1. **Noise on the output distribution.** Depolarising noise after each of the ``L`` ansatz layers, with
   probability ``p``:

   - ``depolarizing_model="global"``: ``rho -> (1 - p) rho + p I / 2^n`` on all ``n`` qubits. A unitary maps
     ``I`` to ``I``, so after ``L`` layers ``rho_L = (1 - p)^L U rho U^dagger + (1 - (1 - p)^L) I / 2^n``: the
     probabilities become ``f q + (1 - f) / 2^n`` and ``<Z_q>`` becomes ``f <Z_q>`` with ``f = (1 - p)^L``
     (closed form, exact, differentiable);
   - ``depolarizing_model="local"``: PennyLane's ``DepolarizingChannel(p)`` on every qubit after every layer,
     ``rho -> (1 - p) rho + p/3 (X rho X + Y rho Y + Z rho Z)``, which is no rescaling. It is simulated by Pauli
     trajectories (:mod:`.noise`): ``trajectories`` state vectors per input, each with an independent Pauli
     drawn per qubit and layer, averaged. Forward only (a gradient through it raises RuntimeError).

2. **Readout error**: each measured bit flips independently with probability ``readout_error`` (a symmetric
   bit-flip before measurement, PennyLane's ``BitFlip``). The distribution is mixed per qubit by
   ``[[1 - r, r], [r, 1 - r]]``; ``<Z_q>`` becomes ``(1 - 2 r) <Z_q>``.

3. **Shots**: with ``shots=S`` the readout is estimated from ``S`` samples of the (noisy) output distribution,
   the counts drawn as one multinomial per input, ``counts ~ Multinomial(S, probs)``: ``"probs"`` features are
   ``counts / S`` (each unbiased, variance ``p (1 - p) / S``); ``"z"`` features are
   ``<Z_q> ~= (1/S) sum_shots (1 - 2 b_q)`` from the same shots (unbiased, variance ``(1 - <Z_q>^2) / S``).
   Sampling runs on the host with NumPy's ``Generator.multinomial`` (the conditional-binomial method, in C,
   vectorised over the inputs of a call; PCG64 seeded by ``seed``): not in the qaa engine, and CUDA tensors
   are copied to the host for it. Draws follow the order of the calls inside one ``measurement`` block, so a
   block rerun on the same inputs gives the same features.

Gradients under a setting (training and evaluation both work; the issue's study is inference):

- ``gradient="adjoint"`` (default): the forward value is the sampled (or noisy) feature; the backward is the
  exact adjoint gradient of its expectation (the global-noise closed form), the shot noise being treated as a
  constant offset. A simulation convenience a device cannot provide.
- ``gradient="parameter_shift"``: the gradient for the angles is the parameter-shift rule,
  ``d<f>/dtheta_i = (f(theta + pi/2 e_i) - f(theta - pi/2 e_i)) / 2`` (each angle drives one RX / RY / RZ
  gate, generator sigma / 2), each shifted evaluation measured with the same setting (2 evaluations per angle
  per circuit; with ``shots`` each is sampled, so the estimate is unbiased). The gradient for the layer's
  input ``x`` stays the exact adjoint gradient of the expectation: a device has no such estimator for an
  amplitude-embedded input.

The setting is process-wide (a module global, not per thread), so that ``torch.compile`` can guard on it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Iterator, Optional

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..engine.ops import cached_circuit, qaa_features_op

__all__ = ["MeasurementSetting", "MeasurementRun", "measurement", "shots", "active_measurement",
           "measured_features", "sample_counts", "z_from_probs", "apply_readout_error", "GRADIENTS",
           "DEPOLARIZING_MODELS"]

#: Values of ``MeasurementSetting.gradient``.
GRADIENTS = ("adjoint", "parameter_shift")
#: Values of ``MeasurementSetting.depolarizing_model``.
DEPOLARIZING_MODELS = ("global", "local")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_probability(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
    return float(v)


@dataclasses.dataclass(frozen=True)
class MeasurementSetting:
    """How QAA features are measured (module docstring: the formulas).

    Attributes:
        shots: samples per circuit (a positive integer), or None for exact expectations. Default None.
        seed: seed of the NumPy PCG64 generator behind shots and trajectories (None: fresh OS entropy). Default 0.
        readout_error: bit-flip probability per qubit at readout, in [0, 1]. Default 0.
        depolarizing: depolarising probability ``p`` per ansatz layer, in [0, 1]. Default 0.
        depolarizing_model: ``"global"`` (all-qubit channel, closed form; default) or ``"local"`` (per-qubit
            channel on every qubit, by Pauli trajectories).
        trajectories: Pauli trajectories per input for the local model (a positive integer). Default 100: the
            standard error of a trajectory average is at most ``1 / sqrt(trajectories)`` per feature (each
            trajectory's feature lies in [-1, 1]), 0.1 at 100.
        gradient: ``"adjoint"`` (default) or ``"parameter_shift"`` (the angles' gradient by the shift rule).

    Raises:
        ValueError: ``shots`` not None and not a positive integer, a probability outside [0, 1], an unknown
            ``depolarizing_model`` or ``gradient``, ``trajectories`` not a positive integer.
    """

    shots: Optional[int] = None
    seed: Optional[int] = 0
    readout_error: float = 0.0
    depolarizing: float = 0.0
    depolarizing_model: str = "global"
    trajectories: int = 100
    gradient: str = "adjoint"

    def __post_init__(self) -> None:
        if self.shots is not None and not (_is_int(self.shots) and self.shots >= 1):
            raise ValueError(f"shots must be a positive integer or None, got {self.shots!r}")
        if self.seed is not None and not (_is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        object.__setattr__(self, "readout_error", _check_probability("readout_error", self.readout_error))
        object.__setattr__(self, "depolarizing", _check_probability("depolarizing", self.depolarizing))
        if self.depolarizing_model not in DEPOLARIZING_MODELS:
            raise ValueError(f"depolarizing_model must be one of {DEPOLARIZING_MODELS}, got {self.depolarizing_model!r}")
        if not (_is_int(self.trajectories) and self.trajectories >= 1):
            raise ValueError(f"trajectories must be a positive integer, got {self.trajectories!r}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}")

    @property
    def is_exact(self) -> bool:
        """True when the setting changes nothing (no shots, no noise)."""
        return self.shots is None and self.readout_error == 0.0 and self.depolarizing == 0.0


class MeasurementRun:
    """An active setting, its random generator and what it cost.

    ``circuits`` counts circuit evaluations (one per input row per layer call, plus ``2 * n_params`` per row for
    each parameter-shift gradient); ``shots_used`` counts the shots drawn (``circuits * shots`` when shots are
    set, 0 otherwise). Both are plain Python integers.
    """

    def __init__(self, setting: MeasurementSetting):
        self.setting = setting
        self.rng = np.random.default_rng(setting.seed)
        self.circuits = 0
        self.shots_used = 0

    def features(self, x: torch.Tensor, theta: torch.Tensor, ansatz: str, n_qubits: int, n_layers: int,
                 kind: str) -> torch.Tensor:
        """:func:`measured_features` under this run's setting and generator."""
        return measured_features(x, theta, ansatz, n_qubits, n_layers, kind, self.setting, run=self)


_ACTIVE: Optional[MeasurementRun] = None


def active_measurement() -> Optional[MeasurementRun]:
    """The run of the innermost ``measurement`` block, or None (exact features)."""
    return _ACTIVE


@contextlib.contextmanager
def measurement(setting: Optional[MeasurementSetting] = None, **fields) -> Iterator[MeasurementRun]:
    """Measure every QAA layer under ``setting`` (or ``MeasurementSetting(**fields)``) inside the block.

    Yields the :class:`MeasurementRun` (its ``circuits`` and ``shots_used`` count the cost). Blocks nest; the
    previous setting is restored on exit. Raises ValueError for a bad setting (before anything changes) and
    TypeError when both ``setting`` and fields are given.
    """
    global _ACTIVE
    if setting is not None and fields:
        raise TypeError("pass either a MeasurementSetting or its fields, not both")
    if setting is None:
        setting = MeasurementSetting(**fields)
    if not isinstance(setting, MeasurementSetting):
        raise TypeError(f"setting must be a MeasurementSetting, got {type(setting).__name__}")
    run = MeasurementRun(setting)
    previous, _ACTIVE = _ACTIVE, run
    try:
        yield run
    finally:
        _ACTIVE = previous


def shots(n: int, seed: Optional[int] = 0) -> "contextlib.AbstractContextManager[MeasurementRun]":
    """``measurement(MeasurementSetting(shots=n, seed=seed))``: every readout estimated from ``n`` shots."""
    return measurement(MeasurementSetting(shots=n, seed=seed))


# ---------------------------------------------------------------------------------------------- the maps
def _signs(n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``S[k, q] = 1 - 2 bit_q(k)`` with wire 0 the most significant bit: shape ``[2^n, n]``."""
    k = torch.arange(2**n, device=device).unsqueeze(1)
    shift = (n - 1 - torch.arange(n, device=device)).unsqueeze(0)
    return (1 - 2 * ((k >> shift) & 1)).to(dtype)


def z_from_probs(probs: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """Per-wire ``<Z_q> = sum_k probs[..., k] (1 - 2 bit_q(k))`` (wire 0 = most significant bit):
    ``[..., 2^n] -> [..., n]`` in ``probs``' dtype. Differentiable."""
    return probs @ _signs(n_qubits, probs.dtype, probs.device)


def apply_readout_error(probs: torch.Tensor, n_qubits: int, r: float) -> torch.Tensor:
    """Flip each measured bit with probability ``r``: ``probs[..., 2^n]`` mixed per wire by
    ``[[1 - r, r], [r, 1 - r]]``. Same shape and dtype; differentiable."""
    if r == 0.0:
        return probs
    lead = probs.shape[:-1]
    t = probs.reshape(-1, *([2] * n_qubits))
    for q in range(n_qubits):
        t = (1.0 - r) * t + r * t.flip(q + 1)
    return t.reshape(*lead, 2**n_qubits)


def _global_depolarize(probs: torch.Tensor, n_qubits: int, p: float, n_layers: int) -> torch.Tensor:
    """``f probs + (1 - f) * sum(probs) / 2^n``, ``f = (1 - p)^L`` (a row without a state stays zero)."""
    if p == 0.0:
        return probs
    f = (1.0 - p) ** n_layers
    return f * probs + (1.0 - f) * probs.sum(-1, keepdim=True) / 2**n_qubits


def sample_counts(probs: torch.Tensor, n_shots: int, rng: np.random.Generator) -> torch.Tensor:
    """Multinomial counts of ``n_shots`` draws from each row of ``probs[B, K]``: float64 ``[B, K]`` on
    ``probs``' device, each row summing to ``n_shots``; a row summing to 0 (no state) gives zero counts.

    Rows are clipped at 0 and renormalised in float64 first (rounding in the engine's probabilities).
    Drawn by ``rng.multinomial`` (NumPy: conditional binomials, in C, vectorised over rows).
    """
    p = probs.detach().to("cpu", torch.float64).numpy()
    p = np.clip(p, 0.0, None)
    total = p.sum(axis=1)
    ok = total > 0
    counts = np.zeros_like(p)
    if ok.any():
        counts[ok] = rng.multinomial(int(n_shots), p[ok] / total[ok, None])
    return torch.from_numpy(counts).to(probs.device)


# ---------------------------------------------------------------------------------------------- features
def _noisy_probs(x, theta, ansatz, n, n_layers, setting, rng) -> torch.Tensor:
    """The (noisy) output distribution ``[B, 2^n]`` in ``x``'s dtype: differentiable for the global model."""
    if setting.depolarizing > 0 and setting.depolarizing_model == "local":
        from .noise import local_depolarized_probs

        probs = local_depolarized_probs(x, theta, ansatz, n, n_layers, setting.depolarizing,
                                        setting.trajectories, rng).to(x.dtype)
    else:
        probs, _ = qaa_features_op(x, theta, ansatz, n, n_layers, "probs")
        probs = _global_depolarize(probs, n, setting.depolarizing, n_layers)
    return apply_readout_error(probs, n, setting.readout_error)


def _mean_features(x, theta, ansatz, n, n_layers, kind, setting, rng) -> torch.Tensor:
    """The expectation of the measured features (exact for the global model): differentiable there."""
    local = setting.depolarizing > 0 and setting.depolarizing_model == "local"
    if kind == "z" and not local:
        z, _ = qaa_features_op(x, theta, ansatz, n, n_layers, "z")
        factor = (1.0 - setting.depolarizing) ** n_layers * (1.0 - 2.0 * setting.readout_error)
        return z if factor == 1.0 else z * factor
    probs = _noisy_probs(x, theta, ansatz, n, n_layers, setting, rng)
    return probs if kind == "probs" else z_from_probs(probs, n)


def _measure_once(x, theta, ansatz, n, n_layers, kind, setting, rng) -> torch.Tensor:
    """One measured evaluation, no gradient: sampled when ``shots`` is set, the (noisy) expectation otherwise."""
    with torch.no_grad():
        if setting.shots is None:
            return _mean_features(x, theta, ansatz, n, n_layers, kind, setting, rng)
        probs = _noisy_probs(x, theta, ansatz, n, n_layers, setting, rng)
        est = sample_counts(probs, setting.shots, rng) / setting.shots
        if kind == "z":
            est = z_from_probs(est, n)
        return est.to(x.dtype)


def _shift_rule_circuit(ansatz: str, n: int, n_layers: int):
    circuit = cached_circuit(ansatz, n, n_layers)
    used = [g[3] for g in circuit.gates if g[3] >= 0]
    if sorted(used) != list(range(circuit.n_params)) or any(g[0] not in ("RX", "RY", "RZ")
                                                           for g in circuit.gates if g[3] >= 0):
        raise ValueError(f"the parameter-shift rule needs each angle in exactly one RX/RY/RZ gate ({ansatz})")
    return circuit


class _ParameterShift(torch.autograd.Function):
    """Value: the given measured features; gradient for ``theta``: the parameter-shift estimate."""

    @staticmethod
    def forward(ctx, theta, x, value, spec, setting, run):
        ctx.save_for_backward(theta, x)
        ctx.spec, ctx.setting, ctx.run = spec, setting, run
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        theta, x = ctx.saved_tensors
        ansatz, n, n_layers, kind = ctx.spec
        setting, run = ctx.setting, ctx.run
        grad = torch.zeros_like(theta)
        base = theta.detach()
        rng = run.rng
        for i in range(theta.shape[0]):
            shifted = []
            for sign in (1.0, -1.0):
                th = base.clone()
                th[i] += sign * math.pi / 2
                shifted.append(_measure_once(x, th, ansatz, n, n_layers, kind, setting, rng))
            grad[i] = 0.5 * (grad_out * (shifted[0] - shifted[1])).sum()
        _count(run, setting, 2 * theta.shape[0] * x.shape[0])
        return grad, None, None, None, None, None


def _count(run: MeasurementRun, setting: MeasurementSetting, circuits: int) -> None:
    run.circuits += circuits
    run.shots_used += circuits * (setting.shots or 0)


def measured_features(x: torch.Tensor, theta: torch.Tensor, ansatz: str, n_qubits: int, n_layers: int,
                      kind: str, setting: MeasurementSetting, run: Optional[MeasurementRun] = None) -> torch.Tensor:
    """QAA features ``readout(U(theta) embed(x))`` of rows ``x[B, d]`` measured under ``setting``:
    ``[B, F]`` in ``x``'s dtype (``F = n`` for ``"z"``, ``2^n`` for ``"probs"``).

    ``theta[P]`` shares ``x``'s dtype and device. Random draws come from ``run.rng`` (a fresh generator seeded
    by ``setting.seed`` when ``run`` is None). Gradients: module docstring. Raises RuntimeError when a gradient
    is required under the local depolarising model (trajectories are forward only), and the engine's errors for
    bad shapes or dtypes.
    """
    if run is None:
        run = MeasurementRun(setting)
    rng = run.rng
    spec = (ansatz, int(n_qubits), int(n_layers), kind)
    wants_grad = torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad)
    local = setting.depolarizing > 0 and setting.depolarizing_model == "local"
    if local and wants_grad:
        raise RuntimeError("local depolarising noise is simulated by Pauli trajectories, forward only: "
                           "evaluate under torch.no_grad() (or use depolarizing_model='global')")
    _count(run, setting, x.shape[0])
    if not wants_grad:
        return _measure_once(x, theta, *spec[:3], kind, setting, rng)
    if setting.gradient == "parameter_shift":
        _shift_rule_circuit(*spec[:3])
        value = _measure_once(x, theta, *spec[:3], kind, setting, rng)
        out = _ParameterShift.apply(theta, x.detach(), value, spec, setting, run)
        if x.requires_grad:  # the input's gradient: adjoint, of the expectation, angles held fixed
            mean_x = _mean_features(x, theta.detach(), *spec[:3], kind, setting, rng)
            out = out + (mean_x - mean_x.detach())
        return out
    mean = _mean_features(x, theta, *spec[:3], kind, setting, rng)
    if setting.shots is None:
        return mean
    value = _measure_once(x, theta, *spec[:3], kind, setting, rng)
    return mean + (value - mean).detach()
