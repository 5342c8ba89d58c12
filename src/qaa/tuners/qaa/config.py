"""Configuration of a QAA adapter (what ``adapter_config.json`` stores)."""
from __future__ import annotations

import dataclasses
import json
from typing import List, Optional, Union

from ...engine import MAX_QUBITS, READOUTS, ansatz_names

PEFT_TYPE = "QAA"
#: Largest ``QAAConfig.init_std`` (radians).
MAX_INIT_STD = 1e3
#: Values of ``QAAConfig.input_transform``.
INPUT_TRANSFORMS = (None, "standardize")


@dataclasses.dataclass
class QAAConfig:
    """Settings of quantum-amplitude embedded adaptation.

    Attributes:
        target_modules: module-name suffixes to wrap (``"q_proj"`` matches ``model.layers.0.self_attn.q_proj``),
            or one regular expression string matched with ``re.fullmatch`` against full names. Default: the
            attention query and value projections, the placement the QAA literature uses.
        n_layers: ansatz layers ``L``. Default 4.
        ansatz: ``"ry_cnot_ring"`` (default; RY on every wire then a ring of CNOTs, real-valued),
            ``"ry_rz_ring_ry"`` (RY and RZ on every wire, CNOT ring, RY; complex-valued) or ``"ry_layers"``
            (RY on every wire, no entangler: the product-circuit control).
        readout: ``"z"`` (default; per-qubit <Z>, n features) or ``"probs"`` (2**n basis probabilities).
        scaling: constant ``s`` multiplying the branch: ``y = W x + s * P(readout)``. Default 1.0.
        rescale_by_norm: multiply the branch by ``||x||`` (the embedding discards the norm). Default False.
        init_std: theta starts as ``Normal(0, init_std)`` radians ("small and random"). Default 0.1; at most
            :data:`MAX_INIT_STD` (angles are periodic: a wider start is already uniform, and a huge one
            overflows to inf in float32).
        dropout: dropout probability on the branch input during training (as LoRA's ``lora_dropout``).
        n_qubits: override the qubit count (default ``ceil(log2 d_in)``); must fit ``d_in``.
        seed: seed for the theta initialisation (None: torch's global generator).
        dtype: dtype of the adapter parameters, ``"float32"`` (default) or ``"float64"``. The branch runs in
            this dtype whatever the base model's dtype; its output is cast to the base output's dtype.
        input_transform: ``None`` (default: the branch embeds ``x`` itself) or ``"standardize"``: the branch
            embeds ``x' = (x - mean) / scale`` per input coordinate, with ``mean`` and ``scale`` per-layer buffers
            of shape ``[d_in]`` in the adapter dtype, the identity (0 and 1) until
            :func:`qaa.calibrate_input_transform` sets them from data. Why: the hidden states of models such as
            SmolLM2 carry one or two "massive" coordinates that hold most of ``||x||^2``, so the normalised
            embedded state ``x / ||x||`` is nearly the same for every token; standardising lets the circuit
            see what differs between tokens. The frozen path ``W x`` always gets the raw ``x``.
    """

    target_modules: Union[List[str], str] = dataclasses.field(default_factory=lambda: ["q_proj", "v_proj"])
    n_layers: int = 4
    ansatz: str = "ry_cnot_ring"
    readout: str = "z"
    scaling: float = 1.0
    rescale_by_norm: bool = False
    init_std: float = 0.1
    dropout: float = 0.0
    n_qubits: Optional[int] = None
    seed: Optional[int] = None
    dtype: str = "float32"
    input_transform: Optional[str] = None
    peft_type: str = PEFT_TYPE

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        tm = self.target_modules
        if isinstance(tm, str):
            if not tm:
                raise ValueError("target_modules must not be empty")
        else:
            if not isinstance(tm, (list, tuple)) or not tm or not all(isinstance(t, str) and t for t in tm):
                raise ValueError(f"target_modules must be a non-empty list of names or a regex string, got {tm!r}")
            self.target_modules = list(tm)
        if not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, got {self.n_layers!r}")
        if self.ansatz not in ansatz_names():
            raise ValueError(f"unknown ansatz {self.ansatz!r} (known: {', '.join(ansatz_names())})")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r} (known: {', '.join(READOUTS)})")
        if not isinstance(self.scaling, (int, float)) or self.scaling != self.scaling or abs(self.scaling) == float("inf"):
            raise ValueError(f"scaling must be a finite number, got {self.scaling!r}")
        if not (isinstance(self.init_std, (int, float)) and 0 <= self.init_std <= MAX_INIT_STD):
            raise ValueError(f"init_std must be a number in [0, {MAX_INIT_STD:g}] (radians), got {self.init_std!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.n_qubits is not None and not (isinstance(self.n_qubits, int) and 1 <= self.n_qubits <= MAX_QUBITS):
            raise ValueError(f"n_qubits must be None or an integer in [1, {MAX_QUBITS}], got {self.n_qubits!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.input_transform not in INPUT_TRANSFORMS:
            raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {self.input_transform!r}")
        if self.peft_type != PEFT_TYPE:
            raise ValueError(f"not a QAA config (peft_type={self.peft_type!r})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QAAConfig":
        """Build from a dict (e.g. a loaded ``adapter_config.json``); unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"modules", "base_model", "qaa_version"}
        if unknown:
            raise ValueError(f"unknown QAA config keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
