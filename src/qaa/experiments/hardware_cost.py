"""What running a QAA model on a quantum device would cost: ``qaa hardware-cost`` (docs/design.md §9).

The count, per adapted layer and token (every token vector that passes an adapted layer is one circuit):

- **circuits per token** = the number of adapted layers (one circuit per layer per token: the state
  preparation of the token's embedded input, ``U(theta)``, measurement of every qubit);
- **shots per circuit** = ``shots`` (each readout is estimated from that many repetitions);
- **scoring** ``N`` inputs of ``T`` tokens each (prompt plus generated tokens, each processed once, as a forward
  with a KV cache does): ``N * T * layers`` circuits;
- **one training epoch** with parameter-shift gradients for the angles: per token and layer, one circuit for the
  forward and ``2 * P`` for the gradient of the layer's ``P`` angles (2 shifted evaluations per angle,
  :mod:`qaa.hardware.measure`). The gradient with respect to the layer's input (needed to backpropagate into the
  layers below) has no device estimator for an amplitude-embedded input and is not counted;
- **wall time** = ``circuits * latency_per_circuit_s + circuits * shots / shots_per_second``.

Gate counts per circuit: the state preparation of :func:`qaa.hardware.amplitude_preparation` (``2^n - 1`` RY,
``2^n - 2`` CNOT) plus the ansatz's gates.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import torch

from ..engine.ops import cached_circuit
from ..tuners.qaa.config import QAAConfig

__all__ = ["DeviceRates", "Workload", "hardware_cost", "format_report", "add_parser", "run_hardware_cost",
           "DEFAULT_RATES"]


@dataclasses.dataclass(frozen=True)
class DeviceRates:
    """Device throughput. Both defaults are illustrative (no measured device stands behind them): set the
    numbers of the device you plan for.

    Attributes:
        shots_per_second: shots (circuit repetitions) the device runs per second, > 0. Default 5000
            (illustrative).
        latency_per_circuit_s: fixed seconds per distinct circuit (compilation, loading, queue-free
            submission), >= 0. Default 0.1 s (illustrative).
    """

    shots_per_second: float = 5000.0
    latency_per_circuit_s: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.shots_per_second, (int, float)) and 0 < self.shots_per_second < float("inf")):
            raise ValueError(f"shots_per_second must be a positive number, got {self.shots_per_second!r}")
        if not (isinstance(self.latency_per_circuit_s, (int, float))
                and 0 <= self.latency_per_circuit_s < float("inf")):
            raise ValueError(f"latency_per_circuit_s must be a number >= 0, got {self.latency_per_circuit_s!r}")


DEFAULT_RATES = DeviceRates()


@dataclasses.dataclass(frozen=True)
class Workload:
    """What is run.

    Attributes:
        test_inputs: inputs scored (default 630: the E2E official test set's MRs, docs/design.md §4).
        tokens_per_test_input: tokens each scored input puts through the model, prompt plus generated
            (default 64, illustrative).
        train_sequences: sequences in one training epoch (default 1000, illustrative).
        tokens_per_train_sequence: tokens per training sequence (default 64, illustrative).
        shots: shots per circuit (default 1000, illustrative).
    """

    test_inputs: int = 630
    tokens_per_test_input: int = 64
    train_sequences: int = 1000
    tokens_per_train_sequence: int = 64
    shots: int = 1000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            low = 1 if f.name == "shots" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{f.name} must be an integer >= {low}, got {v!r}")


def _layers(model: torch.nn.Module, config: QAAConfig):
    """(name, n_qubits, n_params, gate counts) of every layer ``config`` would adapt (the model is not changed)."""
    from ..engine import qubits_for_dim
    from ..tuners.qaa.model import check_targets
    from ..tuners.utils import layer_dims

    names = check_targets(model, config)
    modules = dict(model.named_modules())
    out = []
    for name in names:
        d_in, _ = layer_dims(modules[name])
        need = qubits_for_dim(d_in)
        n = config.n_qubits if config.n_qubits is not None else need
        if n < need:
            raise ValueError(f"{name}: n_qubits={n} cannot embed width {d_in} (needs {need})")
        circuit = cached_circuit(config.ansatz, n, config.n_layers)
        gates = {"ry": 2**n - 1, "cx": 2**n - 2}
        for g in circuit.gates:
            key = {"RX": "rx", "RY": "ry", "RZ": "rz", "CNOT": "cx", "CZ": "cz"}[g[0]]
            gates[key] = gates.get(key, 0) + 1
        out.append({"name": name, "d_in": d_in, "n_qubits": n, "n_params": circuit.n_params,
                    "gates_per_circuit": dict(sorted(gates.items()))})
    return out


def hardware_cost(model: torch.nn.Module, config: QAAConfig, workload: Workload = Workload(),
                  rates: DeviceRates = DEFAULT_RATES) -> dict:
    """The device cost of QAA ``config`` on ``model`` for ``workload`` at ``rates`` (module docstring: formulas).

    ``model`` may live on the meta device (only module names and widths are read; nothing is attached).
    Returns a JSON-serialisable dict: ``layers`` (per adapted layer: name, width, qubits, angles, gates per
    circuit), ``circuits_per_token``, ``shots_per_circuit``, ``score`` and ``train_epoch`` (each with
    ``tokens``, ``circuits``, ``shots``, ``seconds``; seconds are wall time at ``rates``), ``rates``,
    ``workload`` and ``notes``. Raises ValueError when ``config`` matches no layer (as :func:`qaa.attach`) or a
    number is out of range.
    """
    if not isinstance(config, QAAConfig):
        raise TypeError(f"config must be a QAAConfig, got {type(config).__name__}")
    layers = _layers(model, config)
    per_token = len(layers)
    shift_per_token = sum(2 * layer["n_params"] for layer in layers)
    S = workload.shots

    def block(tokens: int, circuits: int) -> dict:
        shots = circuits * S
        seconds = circuits * rates.latency_per_circuit_s + shots / rates.shots_per_second
        return {"tokens": tokens, "circuits": circuits, "shots": shots, "seconds": seconds, "hours": seconds / 3600}

    test_tokens = workload.test_inputs * workload.tokens_per_test_input
    train_tokens = workload.train_sequences * workload.tokens_per_train_sequence
    return {
        "layers": layers,
        "circuits_per_token": per_token,
        "shots_per_circuit": S,
        "score": block(test_tokens, test_tokens * per_token),
        "train_epoch": block(train_tokens, train_tokens * (per_token + shift_per_token)),
        "rates": dataclasses.asdict(rates),
        "workload": dataclasses.asdict(workload),
        "notes": [
            "one circuit per adapted layer per token: state preparation (2^n - 1 RY, 2^n - 2 CNOT), U(theta), "
            "measurement of every qubit",
            "training: per token and layer 1 forward circuit + 2 per angle (parameter shift); the gradient with "
            "respect to the layer input is not counted (no device estimator for an amplitude-embedded input)",
            "wall time = circuits * latency_per_circuit_s + shots / shots_per_second; the default rates are "
            "illustrative, not measured on a device",
        ],
    }


def format_report(report: dict) -> str:
    """A plain-text rendering of :func:`hardware_cost`'s dict."""
    w, r = report["workload"], report["rates"]
    n_set = sorted({layer["n_qubits"] for layer in report["layers"]})
    lines = [
        f"adapted layers (circuits per token): {report['circuits_per_token']}  (qubits: "
        f"{', '.join(map(str, n_set))}; angles per layer: "
        f"{', '.join(map(str, sorted({layer['n_params'] for layer in report['layers']})))})",
        f"gates per circuit: {report['layers'][0]['gates_per_circuit']}" if report["layers"] else "",
        f"shots per circuit: {report['shots_per_circuit']}",
        f"device rates: {r['shots_per_second']:g} shots/s, {r['latency_per_circuit_s']:g} s latency per circuit",
    ]
    for key, what in (("score", f"score {w['test_inputs']} inputs x {w['tokens_per_test_input']} tokens"),
                      ("train_epoch", f"train one epoch ({w['train_sequences']} sequences x "
                                      f"{w['tokens_per_train_sequence']} tokens, parameter shift)")):
        b = report[key]
        lines.append(f"{what}: {b['circuits']:,} circuits, {b['shots']:,} shots, {b['seconds']:,.0f} s "
                     f"({b['hours']:,.1f} h, {b['hours'] / 24:,.1f} days)")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(line for line in lines if line)


# ---------------------------------------------------------------------------------------------- command line
def add_parser(sub) -> None:
    """Register ``qaa hardware-cost`` on the ``qaa`` command's sub-parsers."""
    p = sub.add_parser("hardware-cost", help="what running a QAA model on a quantum device would cost",
                       description="Circuits, shots and wall time to score a test set and to train one epoch "
                                   "(parameter shift) with QAA on a quantum device. The model is built on the meta "
                                   "device from its config: no weights are loaded.")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="'smollm2-135m-instruct' or a local transformers model folder (its config.json is read)")
    p.add_argument("--target-modules", default="q_proj,v_proj", help="comma-separated module names")
    p.add_argument("--n-layers", type=int, default=QAAConfig.n_layers, help="ansatz layers L")
    p.add_argument("--ansatz", default="ry_cnot_ring")
    p.add_argument("--readout", default="z")
    p.add_argument("--n-qubits", type=int, default=None)
    p.add_argument("--test-inputs", type=int, default=Workload.test_inputs,
                   help="inputs scored (default 630: the E2E official test set)")
    p.add_argument("--tokens-per-input", type=int, default=Workload.tokens_per_test_input,
                   help="tokens per scored input, prompt plus generated (default 64, illustrative)")
    p.add_argument("--train-sequences", type=int, default=Workload.train_sequences,
                   help="sequences per training epoch (default 1000, illustrative)")
    p.add_argument("--tokens-per-sequence", type=int, default=Workload.tokens_per_train_sequence,
                   help="tokens per training sequence (default 64, illustrative)")
    p.add_argument("--shots", type=int, default=Workload.shots, help="shots per circuit (default 1000, illustrative)")
    p.add_argument("--shots-per-second", type=float, default=DEFAULT_RATES.shots_per_second,
                   help="device shot rate (default 5000, illustrative)")
    p.add_argument("--latency", type=float, default=DEFAULT_RATES.latency_per_circuit_s,
                   help="seconds of latency per circuit (default 0.1, illustrative)")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")


def _meta_model(name: str) -> torch.nn.Module:
    from pathlib import Path

    from transformers import AutoConfig, AutoModelForCausalLM

    from .base_model import DEFAULT_MODEL, _default_model_folder

    folder = _default_model_folder() if name == DEFAULT_MODEL else Path(name)
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} holds no config.json: not a transformers model folder")
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def run_hardware_cost(args: argparse.Namespace) -> dict:
    """Run ``qaa hardware-cost``: print the report (and write ``--json``); returns the report."""
    workload = Workload(test_inputs=args.test_inputs, tokens_per_test_input=args.tokens_per_input,
                        train_sequences=args.train_sequences, tokens_per_train_sequence=args.tokens_per_sequence,
                        shots=args.shots)
    rates = DeviceRates(shots_per_second=args.shots_per_second, latency_per_circuit_s=args.latency)
    config = QAAConfig(target_modules=[t for t in args.target_modules.split(",") if t], n_layers=args.n_layers,
                       ansatz=args.ansatz, readout=args.readout, n_qubits=args.n_qubits)
    report = hardware_cost(_meta_model(args.model), config, workload, rates)
    report["model"] = str(args.model)
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
    return report
