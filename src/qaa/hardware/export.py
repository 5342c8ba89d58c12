"""Export trained QAA circuits as OpenQASM 3 programs (docs/design.md §9).

:func:`export_openqasm` writes, per adapted layer, the circuit ``U(theta)`` of one adapter with its trained
angles and the measurement of every qubit, plus a ``manifest.json`` that says how to run them elsewhere (wire
order, embedding, readout, the layer's settings). With ``inputs=`` it also writes complete programs that
prepare the amplitude-embedded state of each given token vector from ``|0...0>`` first.

State preparation (:func:`amplitude_preparation`): the embedded state ``psi0 = x_pad / ||x||`` is real, so it is
prepared by a binary tree of RY rotations (Möttönen, Vartiainen, Bergholm and Salomaa, "Transformation of
quantum states using uniformly controlled rotations", Quantum Inf. Comput. 5, 467 (2005), the real-amplitude
case with no RZ stage): wire ``k`` (``k = 0`` the most significant) gets a rotation uniformly controlled by
wires ``0..k-1`` that splits each prefix's norm between its two halves, ``alpha_j = 2 atan2(r1, r0)`` (at the
last wire the signed amplitudes themselves, so signs are exact). A uniformly controlled RY with ``k`` controls
is decomposed into ``2^k`` RY and ``2^k`` CNOT gates: ``theta = M^T alpha / 2^k`` with
``M[j, i] = (-1)^popcount(j & gray(i))``, ``gray(i) = i ^ (i >> 1)``, the CNOT after the ``i``-th RY controlled
by the wire of the bit in which ``gray(i)`` and ``gray(i + 1 mod 2^k)`` differ (ibid., eqs. 3-6). In all:
``2^n - 1`` RY and ``2^n - 2`` CNOT gates.

Conventions (PennyLane's, as the engine's): wire ``w`` is ``q[w]``; ``q[0]`` is the most significant bit of a
basis index, ``k = sum_w b_w 2^(n-1-w)``; ``RY(t) = exp(-i t Y / 2)``, ``RZ(t) = exp(-i t Z / 2)`` (OpenQASM's
``ry``/``rz`` of ``stdgates.inc``); ``cx`` control first. Angles are written with Python's ``repr`` of the
float64 value, which reads back to the same double.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._version import __version__
from ..engine import fused
from ..engine.ops import cached_circuit

__all__ = ["export_openqasm", "amplitude_preparation", "circuit_gates", "openqasm_program", "MANIFEST",
           "EXPORT_FORMAT_VERSION"]

#: Name of the manifest written beside the programs.
MANIFEST = "manifest.json"
#: Version of the export layout recorded in the manifest.
EXPORT_FORMAT_VERSION = 1

_QASM_GATES = {"RX": "rx", "RY": "ry", "RZ": "rz", "CNOT": "cx", "CZ": "cz"}

Gate = Tuple  # ("ry", wire, angle) | ("rz", wire, angle) | ("rx", wire, angle) | ("cx", control, target) | ("cz", a, b)


def _angle(a: float) -> str:
    return repr(float(a))


def circuit_gates(ansatz: str, n_qubits: int, n_layers: int, theta: Sequence[float]) -> List[Gate]:
    """The gates of a built-in ansatz with angles ``theta[P]`` bound, in time order, as OpenQASM names:
    ``("ry", wire, angle)``, ``("cx", control, target)``, ... Raises ValueError for a wrong ``theta`` length."""
    circuit = cached_circuit(ansatz, n_qubits, n_layers)
    theta = [float(t) for t in theta]
    if len(theta) != circuit.n_params:
        raise ValueError(f"theta must have {circuit.n_params} angles, got {len(theta)}")
    out: List[Gate] = []
    for name, w0, w1, param in circuit.gates:
        if param >= 0:
            out.append((_QASM_GATES[name], w0, theta[param]))
        else:
            out.append((_QASM_GATES[name], w0, w1))
    return out


def _embedded(x: np.ndarray, n_qubits: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] > 2**n_qubits:
        raise ValueError(f"input width {x.shape[0]} needs more than {n_qubits} qubits")
    if not np.isfinite(x).all():
        raise ValueError("input holds NaN or inf: it has no amplitude-embedded state to prepare")
    scale = np.abs(x).max(initial=0.0)
    if scale == 0.0:
        raise ValueError("input is all zero: it has no amplitude-embedded state to prepare")
    v = np.zeros(2**n_qubits)
    v[:x.shape[0]] = x / scale
    return v / np.linalg.norm(v)


def amplitude_preparation(x: Sequence[float], n_qubits: int) -> List[Gate]:
    """Gates taking ``|0...0>`` to the amplitude embedding of ``x`` (zero-padded to ``2^n``, L2-normalised):
    ``2^n - 1`` RY and ``2^n - 2`` CNOT gates, as ``("ry", wire, angle)`` and ``("cx", control, target)``
    (module docstring: the decomposition and its source). ``x`` is read as float64.

    Raises ValueError for an input wider than ``2^n`` or one that has no state (all zero, NaN or inf).
    """
    v = _embedded(x, n_qubits)
    n = n_qubits
    gates: List[Gate] = []
    for k in range(n):
        block = 2 ** (n - k)
        groups = v.reshape(2**k, block)
        if k == n - 1:
            alpha = 2.0 * np.arctan2(groups[:, 1], groups[:, 0])
        else:
            half = block // 2
            r0 = np.linalg.norm(groups[:, :half], axis=1)
            r1 = np.linalg.norm(groups[:, half:], axis=1)
            alpha = 2.0 * np.arctan2(r1, r0)
        if k == 0:
            gates.append(("ry", 0, float(alpha[0])))
            continue
        size = 2**k
        gray = np.arange(size) ^ (np.arange(size) >> 1)
        j = np.arange(size)[:, None]
        parity = np.vectorize(lambda v_: bin(int(v_)).count("1") & 1)(j & gray[None, :])
        m = 1.0 - 2.0 * parity                     # M[j, i] = (-1)^popcount(j & gray(i))
        angles = m.T @ alpha / size
        for i in range(size):
            gates.append(("ry", k, float(angles[i])))
            changed = int(gray[i] ^ gray[(i + 1) % size])
            bit = changed.bit_length() - 1           # bit b of the prefix j is wire k-1-b
            gates.append(("cx", k - 1 - bit, k))
    return gates


def _gate_line(g: Gate) -> str:
    if g[0] in ("cx", "cz"):
        return f"{g[0]} q[{g[1]}], q[{g[2]}];"
    return f"{g[0]}({_angle(g[2])}) q[{g[1]}];"


def openqasm_program(n_qubits: int, gates: Sequence[Gate], header: Sequence[str] = (),
                     preparation: Optional[Sequence[Gate]] = None) -> str:
    """An OpenQASM 3 program: ``qubit[n] q; bit[n] c;``, the preparation (if any), a barrier, the gates, and
    ``c = measure q;``. ``header`` lines become ``//`` comments."""
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";']
    lines += [f"// {h}" for h in header]
    lines += [f"qubit[{n_qubits}] q;", f"bit[{n_qubits}] c;"]
    if preparation is not None:
        lines.append("// state preparation: amplitude embedding of the input (Mottonen et al. 2005, RY tree)")
        lines += [_gate_line(g) for g in preparation]
        lines.append("barrier q;")
    else:
        lines.append("// prepare the amplitude-embedded input here (manifest.json, 'embedding')")
    lines.append("// U(theta)")
    lines += [_gate_line(g) for g in gates]
    lines.append("c = measure q;")
    return "\n".join(lines) + "\n"


def _count_gates(gates: Sequence[Gate]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for g in gates:
        out[g[0]] = out.get(g[0], 0) + 1
    return dict(sorted(out.items()))


_EMBEDDING = {
    "wire_order": "wire w is q[w]; q[0] is the most significant bit of the basis index k = sum_w b_w 2^(n-1-w) "
                  "(PennyLane's convention)",
    "padding": "the vector embedded (the layer input, after the input transform if the layer has one) is "
               "padded with zeros at the end to 2^n entries",
    "normalisation": "psi0 = x_pad / ||x||_2 (real amplitudes); a row that is all zero or holds NaN has no "
                     "state (the layer's features are 0 for it)",
    "state_preparation": "not in the U(theta) programs: prepend any amplitude-encoding circuit; the input "
                         "programs use Mottonen et al. 2005 (uniformly controlled RY, 2^n - 1 RY and 2^n - 2 "
                         "CNOT gates)",
}
_READOUTS = {
    "z": "n features: feature w = <Z_w> = P(c[w] = 0) - P(c[w] = 1)",
    "probs": "2^n features: feature k = P(c read as the integer k with c[0] the most significant bit)",
}


def _select_adapter(layers, adapter: Optional[str]) -> str:
    if adapter is not None:
        if not isinstance(adapter, str):
            raise TypeError(f"adapter must be a string, got {type(adapter).__name__}")
        return adapter
    active = {name for _, layer in layers for name in layer.active_adapters}
    if len(active) != 1:
        raise ValueError(f"cannot tell which adapter to export (active adapters: {sorted(active)}); "
                         "pass adapter=")
    return active.pop()


def _inputs_for(layers, inputs) -> Dict[str, torch.Tensor]:
    """Layer name -> inputs ``[k, d_in]`` (float64); checks widths and names."""
    if inputs is None:
        return {}
    names = {name: layer for name, layer in layers}
    if isinstance(inputs, Mapping):
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"inputs name layers the adapter does not have: {unknown}")
        pairs = dict(inputs)
    else:
        pairs = {name: inputs for name in names}
    out = {}
    for name, t in pairs.items():
        t = torch.as_tensor(t).detach().to("cpu", torch.float64)
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2 or t.shape[0] < 1:
            raise ValueError(f"inputs for {name} must have shape (k, d_in) or (d_in,), got {tuple(t.shape)}")
        if t.shape[1] != names[name].d_in:
            raise ValueError(f"inputs for {name} have width {t.shape[1]}, the layer takes {names[name].d_in}")
        out[name] = t
    return out


def _check_folder(folder: Path) -> None:
    if folder.exists():
        if not folder.is_dir():
            raise NotADirectoryError(f"export folder {str(folder)!r} exists and is not a folder")
        if any(folder.iterdir()):
            raise FileExistsError(f"export folder {str(folder)!r} exists and is not empty")
    parent = folder.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"the parent of the export folder, {str(parent)!r}, does not exist")


def export_openqasm(model: torch.nn.Module, folder: Union[str, os.PathLike], adapter: Optional[str] = None,
                    inputs: Union[None, torch.Tensor, Mapping[str, torch.Tensor]] = None) -> Path:
    """Write one adapter's circuits as OpenQASM 3 programs with a manifest; returns the folder.

    Files in ``folder`` (created; it may exist if empty):

    - ``<layer>.qasm`` per adapted layer: ``U(theta)`` with the trained angles (float64 values of the adapter's
      ``theta``) and ``c = measure q;``, to be run after preparing the embedded input;
    - with ``inputs``: ``<layer>.input<i>.qasm``, the same preceded by the preparation of input ``i``;
    - ``manifest.json``: format, qaa version, adapter name, the embedding and readout conventions, and per layer
      its name, program, ``d_in``, ``d_out``, qubits, ansatz, ``L``, readout, scaling, ``rescale_by_norm``, the
      angles, the gate counts, the input transform (``mean`` and ``scale`` of ``"standardize"``, which the user
      applies before embedding) and, per input, the raw vector and the engine's features of it in float64 (what a
      device run should estimate). The output map ``P`` is not exported (it is in the adapter folder).

    Args:
        model: a model with QAA layers (:func:`qaa.attach` / :func:`qaa.load_adapter`).
        folder: the export folder; must not exist, or be empty.
        adapter: the adapter to export (default: the active one, which must be the same on every layer).
        inputs: token vectors ``[k, d_in]`` (or ``[d_in]``) for every adapted layer, all of the same width, or a
            mapping from layer names to such tensors. Each is the layer's input ``x``; the layer's input
            transform, if any, is applied (in float64) before embedding.

    Raises:
        ValueError: a model without QAA layers, an adapter no layer holds, no single active adapter, inputs of
            the wrong width or naming unknown layers, an input without a state (zero, NaN, inf), angles that are
            not finite or on the meta device.
        FileExistsError / NotADirectoryError / FileNotFoundError: a folder that exists and is not empty, a path
            that is a file, a missing parent folder.
        Nothing is written when any of these is raised: the programs are built in memory, written to a
        temporary folder beside ``folder`` and renamed into place.
    """
    from ..tuners.qaa.model import qaa_layers

    folder = Path(folder)
    all_layers = list(qaa_layers(model))
    if not all_layers:
        raise ValueError("the model has no QAA layers: nothing to export")
    adapter = _select_adapter(all_layers, adapter)
    layers = [(name, layer) for name, layer in all_layers if adapter in layer.qaa_configs]
    if not layers:
        raise ValueError(f"adapter {adapter!r} has no layers in this model (adapters: "
                         f"{sorted({a for _, l in all_layers for a in l.qaa_configs})})")
    per_layer_inputs = _inputs_for(layers, inputs)
    _check_folder(folder)

    files: Dict[str, str] = {}
    entries = []
    used_names = set()
    for name, layer in layers:
        cfg = layer.qaa_configs[adapter]
        n = layer.n_qubits_for(cfg)
        theta_t = layer.qaa_theta[adapter].detach()
        if theta_t.device.type == "meta":
            raise ValueError(f"{name}: the adapter's angles are on the meta device (materialise them first)")
        theta = theta_t.to("cpu", torch.float64)
        if not torch.isfinite(theta).all():
            raise ValueError(f"{name}: the adapter's angles are not finite")
        gates = circuit_gates(cfg.ansatz, n, cfg.n_layers, theta.tolist())
        stem = name if name not in used_names else f"{name}_{len(used_names)}"
        used_names.add(stem)
        header = [f"qaa {__version__}: layer {name}, adapter {adapter!r}",
                  f"ansatz {cfg.ansatz}, {cfg.n_layers} layers, {n} qubits, readout {cfg.readout}",
                  "q[0] is the most significant bit of the basis index (manifest.json)"]
        program = f"{stem}.qasm"
        files[program] = openqasm_program(n, gates, header)
        transform = None
        if adapter in layer.qaa_input:
            std = layer.qaa_input[adapter]
            transform = {"kind": "standardize", "formula": "x' = (x - mean) / scale", "calibrated": std.calibrated,
                         "mean": std.mean.detach().to("cpu", torch.float64).tolist(),
                         "scale": std.scale.detach().to("cpu", torch.float64).tolist()}
        entry = {"name": name, "program": program, "d_in": layer.d_in, "d_out": layer.d_out, "n_qubits": n,
                 "ansatz": cfg.ansatz, "n_layers": cfg.n_layers, "readout": cfg.readout,
                 "n_features": n if cfg.readout == "z" else 2**n, "scaling": cfg.scaling,
                 "rescale_by_norm": cfg.rescale_by_norm, "theta": theta.tolist(), "gates": _count_gates(gates),
                 "input_transform": transform, "inputs": []}
        xs = per_layer_inputs.get(name)
        if xs is not None:
            xin = xs
            if transform is not None:
                xin = (xs - torch.tensor(transform["mean"], dtype=torch.float64)) / torch.tensor(
                    transform["scale"], dtype=torch.float64)
            circuit = cached_circuit(cfg.ansatz, n, cfg.n_layers)
            expected, _ = fused.forward_features(circuit, theta, xin, cfg.readout, path="state")
            for i in range(xs.shape[0]):
                try:
                    prep = amplitude_preparation(xin[i].numpy(), n)
                except ValueError as e:
                    raise ValueError(f"inputs for {name}, row {i}: {e}") from None
                prog = f"{stem}.input{i}.qasm"
                files[prog] = openqasm_program(n, gates, header + [f"input {i}: state preparation included"],
                                               preparation=prep)
                entry["inputs"].append({"program": prog, "x": xs[i].tolist(), "embedded": xin[i].tolist(),
                                        "expected_features": expected[i].tolist(),
                                        "preparation_gates": _count_gates(prep)})
        entries.append(entry)

    manifest = {"format": "qaa-openqasm-export", "format_version": EXPORT_FORMAT_VERSION, "qaa_version": __version__,
                "openqasm": "3.0", "gate_set": "stdgates.inc: rx, ry, rz, cx, cz", "adapter": adapter,
                "embedding": _EMBEDDING, "readout": _READOUTS,
                "branch": "y = W x + scaling * P(features) (* ||x|| with rescale_by_norm); P is in the adapter "
                          "folder (qaa.save_adapter), not here",
                "layers": entries}
    files[MANIFEST] = json.dumps(manifest, indent=1, allow_nan=False) + "\n"

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, folder)  # replaces an empty folder (POSIX rename)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _umask() -> int:
    """The process's umask, read from /proc where it can be (setting it to read it races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # no portable read-only query: set the strictest mask and restore at once
    os.umask(mask)
    return mask
