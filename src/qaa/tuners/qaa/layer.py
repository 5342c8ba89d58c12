"""The QAA layer: a frozen linear map plus one or more quantum branches (adapters), selected by name."""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from torch import nn

from ... import engine
from ...engine import qaa_features
from ..utils import layer_dims
from .config import QAAConfig

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@functools.lru_cache(maxsize=64)
def circuit_for(ansatz: str, n_qubits: int, n_layers: int):
    """Cached engine circuit for an ansatz (circuits are immutable once built)."""
    return engine.build_circuit(ansatz, n_qubits, n_layers)


class InputStandardizer(nn.Module):
    """The ``"standardize"`` input transform of one adapter on one layer: ``x' = (x - mean) / scale``.

    ``mean`` and ``scale`` are buffers of shape ``[d_in]`` in the adapter dtype, 0 and 1 (the identity, bit for
    bit) until :meth:`set_statistics` (called by :func:`qaa.calibrate_input_transform`) replaces them. The
    forward only reads them; ``calibrated`` records whether statistics were set.
    """

    def __init__(self, d_in: int, dtype: torch.dtype, device=None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in, dtype=dtype, device=device))
        self.register_buffer("scale", torch.ones(d_in, dtype=dtype, device=device))
        self.calibrated = False

    def set_statistics(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Copy ``mean`` and ``scale`` (shape ``[d_in]``, any float dtype) into the buffers; mark calibrated.

        Raises:
            ValueError: a shape other than ``[d_in]``, a non-finite value, or a ``scale`` entry ``<= 0``.
        """
        d_in = self.mean.shape[0]
        for what, t in (("mean", mean), ("scale", scale)):
            if tuple(t.shape) != (d_in,):
                raise ValueError(f"{what} must have shape ({d_in},), got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{what} holds non-finite values")
        if not (scale > 0).all():
            raise ValueError("scale must be > 0 everywhere")
        with torch.no_grad():
            self.mean.copy_(mean.to(self.mean.dtype))
            self.scale.copy_(scale.to(self.scale.dtype))
        self.calibrated = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def extra_repr(self) -> str:
        return f"d_in={self.mean.shape[0]}, calibrated={self.calibrated}"


class QAALayer(nn.Module):
    """Wraps a frozen ``nn.Linear`` / ``Conv1D`` ``W`` and adds ``s * P(readout(U(theta) embed(x)))``.

    For input ``x[..., d_in]`` (any float dtype) the output is ``W x + s * P(f)`` of the base output's dtype,
    where ``f = readout(U(theta) embed(x))`` is computed by the statevector engine in the adapter's dtype
    (float32 by default) and ``P: Linear(F -> d_out, bias=False)`` starts at zero, so the layer equals the
    base layer exactly until the first optimizer step. With ``rescale_by_norm`` the branch is multiplied by
    ``||x||``. Per adapter the trainable parameters are ``theta`` (``n_params``) and ``P`` (``F * d_out``).
    An adapter with ``input_transform="standardize"`` also holds an :class:`InputStandardizer` in
    ``qaa_input[name]`` (buffers, not trained): the branch then embeds ``(x - mean) / scale`` instead of ``x``.
    """

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: QAAConfig,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        dims = layer_dims(base_layer)
        if dims is None:
            raise TypeError(f"QAA wraps nn.Linear or transformers Conv1D, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.d_in, self.d_out = dims
        self.qaa_theta = nn.ParameterDict()
        self.qaa_out = nn.ModuleDict()
        self.qaa_dropout = nn.ModuleDict()
        self.qaa_input = nn.ModuleDict()  # only adapters with an input transform have an entry
        self.qaa_configs = {}
        self.active_adapter: Optional[str] = None
        self.disabled = False
        self.add_adapter(adapter_name, config, generator)

    # ---- adapters ----
    def n_qubits_for(self, config: QAAConfig) -> int:
        need = engine.qubits_for_dim(self.d_in)
        n = config.n_qubits if config.n_qubits is not None else need
        if n < need:
            raise ValueError(f"n_qubits={n} cannot embed width {self.d_in} (needs {need})")
        if n > engine.MAX_QUBITS:
            raise ValueError(f"input width {self.d_in} needs {n} qubits; the engine supports at most "
                             f"{engine.MAX_QUBITS}")
        return n

    def add_adapter(self, name: str, config: QAAConfig, generator: Optional[torch.Generator] = None) -> None:
        """Add adapter ``name`` (theta ~ Normal(0, init_std), P = 0) and make it active."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"adapter name must be a non-empty string without '.', got {name!r}")
        if name in self.qaa_configs:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        n = self.n_qubits_for(config)
        circ = circuit_for(config.ansatz, n, config.n_layers)
        dtype = _DTYPES[config.dtype]
        device = self.base_layer.weight.device
        theta = torch.empty(circ.n_params, dtype=dtype)
        theta.normal_(0.0, config.init_std, generator=generator)
        self.qaa_theta[name] = nn.Parameter(theta.to(device))
        out = nn.Linear(engine.n_features(circ, config.readout), self.d_out, bias=False, device=device, dtype=dtype)
        nn.init.zeros_(out.weight)
        self.qaa_out[name] = out
        self.qaa_dropout[name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        if config.input_transform == "standardize":
            self.qaa_input[name] = InputStandardizer(self.d_in, dtype, device)
        self.qaa_configs[name] = config
        self.active_adapter = name

    def delete_adapter(self, name: str) -> None:
        if name not in self.qaa_configs:
            raise KeyError(f"no adapter named {name!r}; have {sorted(self.qaa_configs)}")
        del self.qaa_theta[name], self.qaa_out[name], self.qaa_dropout[name]
        if name in self.qaa_input:
            del self.qaa_input[name]
        del self.qaa_configs[name]
        if self.active_adapter == name:
            self.active_adapter = next(iter(self.qaa_configs), None)

    def circuit(self, name: str):
        cfg = self.qaa_configs[name]
        return circuit_for(cfg.ansatz, self.n_qubits_for(cfg), cfg.n_layers)

    # ---- compute ----
    def branch(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The quantum branch ``s * P(readout(...))`` for adapter ``name``: ``x[..., d_in] -> [..., d_out]``
        in the adapter's dtype. With an input transform, ``x`` is standardised first (then dropout), and
        ``rescale_by_norm`` uses the norm of the standardised vector, the one that is embedded."""
        cfg = self.qaa_configs[name]
        theta = self.qaa_theta[name]
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected input width {self.d_in}, got {x.shape[-1]}")
        xin = x.to(theta.dtype)
        if name in self.qaa_input:
            xin = self.qaa_input[name](xin)
        xin = self.qaa_dropout[name](xin)
        lead = xin.shape[:-1]
        rows = xin.reshape(-1, self.d_in)
        feats, _ = qaa_features(rows, theta, self.circuit(name), cfg.readout)
        out = self.qaa_out[name](feats)
        if cfg.rescale_by_norm:
            # ||x|| in float64: a float32 row near the float32 limit (e.g. 3e38) has a norm beyond it, and
            # 0 * inf would turn the zero-initialised branch into NaN. The product is exact in float64 and
            # overflows to inf on the cast back only where the branch itself is that large. NaN entries count
            # as 0: the engine gives a row holding NaN zero features, so its branch is 0 (never NaN).
            finite = torch.nan_to_num(rows, nan=0.0, posinf=math.inf, neginf=-math.inf)
            norms = torch.linalg.vector_norm(finite, dim=-1, dtype=torch.float64)
            out = (out.to(torch.float64) * norms.unsqueeze(-1)).to(out.dtype)
        if cfg.scaling != 1.0:
            out = out * cfg.scaling
        return out.reshape(*lead, self.d_out)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled or self.active_adapter is None:
            return result
        return result + self.branch(x, self.active_adapter).to(result.dtype)

    def extra_repr(self) -> str:
        cfgs = ", ".join(f"{k}: {c.ansatz} L={c.n_layers} n={self.n_qubits_for(c)} readout={c.readout}"
                         + (f" input={c.input_transform}" if c.input_transform else "")
                         for k, c in self.qaa_configs.items())
        return f"d_in={self.d_in}, d_out={self.d_out}, adapters=[{cfgs}], active={self.active_adapter!r}"
