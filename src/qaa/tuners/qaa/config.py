"""Configuration of a QAA adapter (what ``adapter_config.json`` stores)."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import List, Optional, Union

import torch.nn as nn

from ...engine import MAX_QUBITS, READOUTS, ansatz_names

PEFT_TYPE = "QAA"
#: Largest ``QAAConfig.init_std`` (radians).
MAX_INIT_STD = 1e3
#: Values of ``QAAConfig.input_transform``.
INPUT_TRANSFORMS = (None, "standardize")
#: Seeds are signed 64-bit integers (torch's generators).
SEED_RANGE = (-(2**63), 2**63 - 1)
#: Fields a saved config may lack, with the value older saves implied (they predate the field).
OPTIONAL_SAVED_FIELDS = {"input_transform": None}
#: Keys a saved config holds besides the fields (the loaders read them; ``from_dict`` ignores them).
SAVED_EXTRA_KEYS = ("modules", "base_model", "qaa_version", "format_version", "adapter_name", "config_sha256",
                    "tensors_sha256", "base_model_name_or_path", "base_model_class", "base_model_fingerprint")
#: Ansatz layers L by default (the commands' --n-layers default and the comparison's QAA setting read it here).
DEFAULT_N_LAYERS = 4
#: Longest adapter name.
MAX_ADAPTER_NAME = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_RESERVED: Optional[frozenset] = None


def reserved_adapter_names() -> frozenset:
    """Names no adapter may take: the attributes of ``nn.ModuleDict`` / ``nn.ParameterDict`` (``train``,
    ``training``, ``to``, ``forward``, ``state_dict``, ...), which hold the adapters keyed by name."""
    global _RESERVED
    if _RESERVED is None:
        _RESERVED = frozenset(n for n in set(dir(nn.ModuleDict())) | set(dir(nn.ParameterDict()))
                              if _NAME_RE.fullmatch(n))
    return _RESERVED


def check_adapter_name(name, argument: str = "adapter_name") -> str:
    """Return ``name`` if it is a valid adapter name, else raise ValueError naming ``argument``.

    A name is a plain identifier, since it becomes a folder name (``qaa_adapters/<name>``, checkpoint folders)
    and a key of the layers' module dicts: 1 to 64 characters from ``[A-Za-z0-9_-]``, starting with a letter or
    digit (so no path separator, ``.``, ``..``, empty or hidden name), and not one of
    :func:`reserved_adapter_names`.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > MAX_ADAPTER_NAME:
        raise ValueError(f"adapter name {argument}={name!r} is not a plain name: 1 to {MAX_ADAPTER_NAME} characters "
                         "from A-Z a-z 0-9 _ -, starting with a letter or digit (it names folders: no path "
                         "separators, dots or empty names)")
    if name in reserved_adapter_names():
        raise ValueError(f"adapter name {argument}={name!r} is reserved: it is an attribute of the torch module dicts that hold "
                         f"the adapters. Reserved names: {', '.join(sorted(reserved_adapter_names()))}")
    return name


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
    n_layers: int = DEFAULT_N_LAYERS
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

    def __setattr__(self, key, value):
        if self.__dict__.get("_read_only", False):
            raise AttributeError(
                f"this QAAConfig is the read-only config of an attached adapter; setting {key!r} would change "
                "neither the layers nor what is saved. Build a new adapter instead: "
                "attach(model, dataclasses.replace(config, ...), new_name)")
        super().__setattr__(key, value)

    def read_only_copy(self) -> "QAAConfig":
        """A copy whose fields cannot be set (AttributeError): what an attached model holds and hands out."""
        copy = dataclasses.replace(self)
        object.__setattr__(copy, "_read_only", True)
        return copy

    def validate(self) -> None:
        """Raise ValueError naming the first bad field (a wrong type included: ``rescale_by_norm="false"``,
        ``seed=1.5`` and ``n_layers=True`` are refused, never converted)."""
        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def integer(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for field in ("ansatz", "readout", "dtype", "peft_type"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"{field} must be a string, got {getattr(self, field)!r}")
        if not isinstance(self.rescale_by_norm, bool):
            raise ValueError(f"rescale_by_norm must be True or False, got {self.rescale_by_norm!r}")
        if not integer(self.n_layers):
            raise ValueError(f"n_layers must be a positive integer, got {self.n_layers!r}")
        for field in ("scaling", "init_std", "dropout"):
            if not number(getattr(self, field)):
                raise ValueError(f"{field} must be a number, got {getattr(self, field)!r}")
        if self.n_qubits is not None and not integer(self.n_qubits):
            raise ValueError(f"n_qubits must be None or an integer, got {self.n_qubits!r}")
        if self.seed is not None and not (integer(self.seed) and SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]):
            raise ValueError(f"seed must be None or an integer in [-2**63, 2**63 - 1], got {self.seed!r}")
        if self.input_transform is not None and not isinstance(self.input_transform, str):
            raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {self.input_transform!r}")
        tm = self.target_modules
        if isinstance(tm, str):
            if not tm:
                raise ValueError("target_modules must not be empty")
        else:
            if not isinstance(tm, (list, tuple)) or not tm or not all(isinstance(t, str) and t for t in tm):
                raise ValueError(f"target_modules must be a non-empty list of names or a regex string, got {tm!r}")
            object.__setattr__(self, "target_modules", list(tm))  # normalised (also on a read-only copy)
        if not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, got {self.n_layers!r}")
        if self.ansatz not in ansatz_names():
            raise ValueError(f"unknown ansatz {self.ansatz!r} (known: {', '.join(ansatz_names())})")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r} (known: {', '.join(READOUTS)})")
        if not math.isfinite(self.scaling):
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
        """The fields as a dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, saved: bool = False) -> "QAAConfig":
        """Build from a dict (e.g. a loaded ``adapter_config.json``).

        With ``saved=True`` (what the loaders use) every field must be present, except those of
        :data:`OPTIONAL_SAVED_FIELDS` (older saves predate them): a missing field would otherwise take its
        default, not the value the adapter was trained with. Keys of :data:`SAVED_EXTRA_KEYS` are ignored.

        Raises:
            ValueError: ``d`` is not a dict, unknown keys, missing fields (``saved=True``), or an invalid or
                wrongly typed value (see :meth:`validate`).
        """
        if not isinstance(d, dict):
            raise ValueError(f"a QAA config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - set(SAVED_EXTRA_KEYS)
        if unknown:
            raise ValueError(f"unknown QAA config keys: {sorted(unknown)}")
        values = {k: v for k, v in d.items() if k in names}
        if saved:
            missing = sorted(names - set(values) - set(OPTIONAL_SAVED_FIELDS))
            if missing:
                raise ValueError(f"the saved QAA config lacks the field(s) {missing}; a missing field would "
                                 "silently take its default instead of the value the adapter was trained with")
            values = {**OPTIONAL_SAVED_FIELDS, **values}
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
