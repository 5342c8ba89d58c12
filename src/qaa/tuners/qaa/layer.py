"""The QAA layer: a frozen linear map plus one or more quantum branches (adapters), selected by name."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ... import engine
from ...engine.ops import cached_circuit, qaa_features_op
from ...hardware.measure import active_measurement
from ..utils import layer_dims
from .config import QAAConfig, check_adapter_name
from .input_transform import InputStandardizer

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# Shared by every layer using this ansatz (and by the custom operators): never handed out, since a Circuit can
# be extended (add_rotation / add_two_qubit) and a caller's edit would change every adapter built on it.
_cached_circuit = cached_circuit


def circuit_for(ansatz: str, n_qubits: int, n_layers: int):
    """A new engine circuit for an ansatz (the caller may extend it; the layers' own circuits are unaffected)."""
    return engine.build_circuit(ansatz, n_qubits, n_layers)


def adapter_device(base_layer: nn.Module) -> torch.device:
    """Where a new adapter of ``base_layer`` lives: the base weight's device, except for a base layer whose
    weight accelerate offloaded (on meta, with an ``_hf_hook`` that loads it onto an ``execution_device`` for
    each forward): the adapter, a few kB, then lives on that execution device and is never offloaded."""
    device = base_layer.weight.device
    if device.type == "meta":
        hook = getattr(base_layer, "_hf_hook", None)
        execution = getattr(hook, "execution_device", None)
        if execution is not None:
            device = torch.device(execution if not isinstance(execution, int) else f"cuda:{execution}")
    return device


def _in_backward() -> bool:
    """Whether the calling thread is running an autograd backward pass (e.g. a checkpoint's recomputation)."""
    return torch._C._current_graph_task_id() != -1


class QAALayer(nn.Module):
    """Wraps a frozen ``nn.Linear`` / ``Conv1D`` ``W`` and adds ``s * P(readout(U(theta) embed(x)))``.

    For input ``x[..., d_in]`` (any float dtype) the output is ``W x + s * P(f)`` of the base output's dtype,
    where ``f = readout(U(theta) embed(x))`` is computed by the statevector engine in the adapter's dtype
    (float32 by default) and ``P: Linear(F -> d_out, bias=False)`` starts at zero, so the layer equals the
    base layer exactly until the first optimizer step. With ``rescale_by_norm`` the branch is multiplied by
    ``||x||``. Per adapter the trainable parameters are ``theta`` (``n_params``) and ``P`` (``F * d_out``).
    An adapter with ``input_transform="standardize"`` also holds an :class:`InputStandardizer` in
    ``qaa_input[name]`` (buffers, not trained): the branch then embeds ``(x - mean) / scale`` instead of ``x``.

    Reliability rules (docs/design.md, "Reliability rules"):

    - dtype: the adapter's parameters and buffers keep their configured dtype through ``module.half()``,
      ``.to(torch.bfloat16)``, ``.double()`` (device moves apply); the base layer is cast as asked.
    - ``state_dict()`` names the base layer's tensors as the unwrapped layer would (``weight``, ``bias``), so a
      saved model loads into the base architecture; ``load_state_dict`` accepts those names and the older
      ``base_layer.*`` ones.
    - A forward recomputed inside a backward pass (gradient checkpointing) raises RuntimeError when the active
      adapter or :attr:`disabled` changed since the forward it recomputes: it would otherwise give gradients
      of another function.
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
        # adapter name -> (ansatz, n_qubits, n_layers, readout): the custom operator's circuit arguments,
        # resolved once when the adapter is added (the forward calls no engine function to find them).
        self.qaa_specs = {}
        self._state_epoch = 0     # bumped whenever what the forward computes changes (active adapter, disabled)
        self._forward_epoch = 0   # _state_epoch at the last forward run outside a backward pass
        self._active: Tuple[str, ...] = ()     # the adapters the forward adds, in order
        self._weights: Dict[str, float] = {}  # their output weights (absent: 1.0)
        self._disabled = False
        self._register_state_dict_hook(_base_names_state_dict_hook)
        self._register_load_state_dict_pre_hook(_base_names_load_hook, with_module=True)
        self.add_adapter(adapter_name, config, generator)

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_active" not in self.__dict__:  # pickled with one active adapter (before several could be)
            old = self.__dict__.pop("_active_adapter", None)
            self._active, self._weights = ((old,) if old is not None else ()), {}
        if "qaa_specs" not in self.__dict__:  # pickled before the specs existed: resolve them once, here
            self.qaa_specs = {name: (cfg.ansatz, self.n_qubits_for(cfg), cfg.n_layers, cfg.readout)
                              for name, cfg in self.qaa_configs.items()}

    @property
    def active_adapter(self):
        """The adapter the forward adds: its name, ``None`` for none, or a list of names when several are active
        (as peft's ``active_adapter``). Setting it to a name, ``None`` or a list activates those adapters with
        weight 1 (:meth:`set_active_adapters` sets weights)."""
        if not self._active:
            return None
        return self._active[0] if len(self._active) == 1 else list(self._active)

    @active_adapter.setter
    def active_adapter(self, name) -> None:
        if name is None:
            self.set_active_adapters(())
        elif isinstance(name, str):
            self.set_active_adapters((name,))
        else:
            self.set_active_adapters(name)

    @property
    def active_adapters(self) -> Tuple[str, ...]:
        """The adapters the forward adds, in order (empty: none)."""
        return self._active

    @property
    def adapter_weights(self) -> Dict[str, float]:
        """Output weight of each active adapter (the forward adds ``weight * branch``)."""
        return {n: self._weights.get(n, 1.0) for n in self._active}

    def set_active_adapters(self, names: Sequence[str], weights: Optional[Sequence[float]] = None) -> None:
        """Make the forward add ``sum_i weights[i] * branch_i(x)`` over adapters ``names`` (weights default to 1).

        Raises KeyError for a name this layer does not hold; ValueError for a repeated name or a weights list
        of another length (callers validate the weights' values: :func:`qaa.set_adapter`)."""
        names = tuple(names)
        for n in names:
            if n not in self.qaa_configs:
                raise KeyError(f"no adapter named {n!r} on this layer; have {sorted(self.qaa_configs)}")
        if len(set(names)) != len(names):
            raise ValueError(f"adapter names repeat: {list(names)}")
        if weights is not None and len(weights) != len(names):
            raise ValueError(f"{len(weights)} weights for {len(names)} adapters")
        new_weights = {} if weights is None else {n: float(w) for n, w in zip(names, weights) if float(w) != 1.0}
        if names != self._active or new_weights != self._weights:
            self._state_epoch += 1
        self._active, self._weights = names, new_weights

    @property
    def disabled(self) -> bool:
        """When True the forward computes the base layer alone (see :func:`qaa.disable_adapter`)."""
        return self._disabled

    @disabled.setter
    def disabled(self, value: bool) -> None:
        value = bool(value)
        if value != self._disabled:
            self._state_epoch += 1
        self._disabled = value

    def _apply(self, fn, recurse=True):
        # The adapter keeps its configured dtype (the dtype rule): casts reach the base layer only; the
        # adapter's tensors (and their gradients) follow device moves alone. Values are never round-tripped
        # through a narrower dtype.
        if recurse:
            def keep_dtype(t):
                out = fn(t)
                if isinstance(out, torch.Tensor) and out.dtype != t.dtype and t.is_floating_point():
                    out = t.to(device=out.device)
                return out

            for name, child in self.named_children():
                child._apply(fn if name == "base_layer" else keep_dtype)
        return super()._apply(fn, recurse=False)

    # The base layer's tensors under the unwrapped layer's names (as peft's tuner layers expose them): the
    # state dict names them "<layer>.weight" / "<layer>.bias" (the state_dict hook), and tools that resolve
    # state-dict names to attributes (torch.distributed.checkpoint's get/set_model_state_dict, FSDP2 saving in
    # accelerate) find them here.
    @property
    def weight(self) -> torch.Tensor:
        """The base layer's ``weight`` (the same Parameter)."""
        return self.base_layer.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        """The base layer's ``bias`` (the same Parameter, or None)."""
        return getattr(self.base_layer, "bias", None)

    # peft's merge_and_unload() / unload() visit every module with a ``base_layer`` and, unless the module has
    # this method, call ``merge()`` and ``get_base_layer()`` on it as on its own tuner layers. QAA is non-linear
    # in the input and cannot be merged (qaa.merge raises MergeError), so under peft's merge or unload a QAA layer
    # stays as it is: peft merges or drops its LoRA layers elsewhere in the model and puts this layer back.
    def unload_and_optionally_merge_module(self, merge: bool = False, safe_merge: bool = False,
                                           adapter_names=None) -> "QAALayer":
        """peft's unloading hook: returns this layer unchanged (its QAA adapters kept, nothing merged)."""
        del merge, safe_merge, adapter_names
        return self

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
        """Add adapter ``name`` (theta ~ Normal(0, init_std), P = 0) and make it active. The layer keeps a
        read-only copy of ``config`` (``qaa_configs[name]``).

        Raises:
            ValueError: an invalid or reserved name (:func:`qaa.tuners.qaa.config.check_adapter_name`), a name
                the layer already has, an invalid config.
            TypeError: ``config`` is not a QAAConfig.
        """
        check_adapter_name(name, "name")
        if name in self.qaa_configs:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        if not isinstance(config, QAAConfig):
            raise TypeError(f"config must be a QAAConfig, got {type(config).__name__}")
        config.validate()
        # the layer's own copy, read-only: the caller's object may change later, and the copy is what runs
        config = config if config.__dict__.get("_read_only") else config.read_only_copy()
        n = self.n_qubits_for(config)
        circ = _cached_circuit(config.ansatz, n, config.n_layers)
        dtype = _DTYPES[config.dtype]
        device = adapter_device(self.base_layer)
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
        self.qaa_specs[name] = (config.ansatz, n, config.n_layers, config.readout)
        self.active_adapter = name

    def reset_adapter_parameters(self, name: str, generator: Optional[torch.Generator] = None,
                                 device=None) -> None:
        """Initialise adapter ``name`` as :meth:`add_adapter` does: ``theta ~ Normal(0, init_std)`` drawn on the
        CPU from ``generator`` (torch's global generator if None) in the adapter dtype, ``P = 0``, an input
        transform back to the identity (uncalibrated).

        Tensors on the meta device (a model built under ``torch.device("meta")`` or with empty weights) are
        first materialised on ``device`` (default: :func:`adapter_device`, or the CPU when that is meta too)
        as new tensors (parameters keep ``requires_grad``; an optimizer built before holds the old ones).
        Raises KeyError for an unknown adapter.
        """
        if name not in self.qaa_configs:
            raise KeyError(f"no adapter named {name!r}; have {sorted(self.qaa_configs)}")
        cfg = self.qaa_configs[name]
        dtype = _DTYPES[cfg.dtype]
        if device is None:
            device = adapter_device(self.base_layer)
            if device.type == "meta":
                device = torch.device("cpu")
        # A meta tensor cannot take real storage in place (set_data refuses the device change): replace it.
        slots = [(self.qaa_theta, name), (self.qaa_out[name], "weight")]
        if name in self.qaa_input:
            slots += [(self.qaa_input[name], "mean"), (self.qaa_input[name], "scale")]
        for owner, key in slots:
            old = owner[key] if isinstance(owner, nn.ParameterDict) else getattr(owner, key)
            if old.device.type != "meta":
                continue
            new = torch.empty(old.shape, dtype=dtype, device=device)
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            if isinstance(owner, nn.ParameterDict):
                owner[key] = new
            else:
                setattr(owner, key, new)
        theta = torch.empty(self.qaa_theta[name].shape[0], dtype=dtype)
        theta.normal_(0.0, cfg.init_std, generator=generator)  # on the CPU, as add_adapter draws it
        with torch.no_grad():
            self.qaa_theta[name].copy_(theta)
            self.qaa_out[name].weight.zero_()
            if name in self.qaa_input:
                self.qaa_input[name].mean.zero_()
                self.qaa_input[name].scale.fill_(1.0)
                self.qaa_input[name].calibrated = False

    def delete_adapter(self, name: str) -> None:
        if name not in self.qaa_configs:
            raise KeyError(f"no adapter named {name!r}; have {sorted(self.qaa_configs)}")
        del self.qaa_theta[name], self.qaa_out[name], self.qaa_dropout[name]
        if name in self.qaa_input:
            del self.qaa_input[name]
        del self.qaa_configs[name], self.qaa_specs[name]
        if name in self._active:
            rest = tuple(n for n in self._active if n != name)
            if rest:
                self.set_active_adapters(rest, [self._weights.get(n, 1.0) for n in rest])
            else:
                self.active_adapter = next(iter(self.qaa_configs), None)

    def _circuit(self, name: str):
        ansatz, n, n_layers, _ = self.qaa_specs[name]
        return _cached_circuit(ansatz, n, n_layers)

    def circuit(self, name: str):
        """A new copy of adapter ``name``'s circuit (editing it does not change the layer)."""
        cfg = self.qaa_configs[name]
        return circuit_for(cfg.ansatz, self.n_qubits_for(cfg), cfg.n_layers)

    # ---- compute ----
    def branch(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The quantum branch ``s * P(readout(...))`` for adapter ``name``: ``x[..., d_in] -> [..., d_out]``
        in the adapter's dtype. With an input transform, ``x`` is standardised first (then dropout), and
        ``rescale_by_norm`` uses the norm of the standardised vector, the one that is embedded."""
        cfg = self.qaa_configs[name]
        dtype = _DTYPES[cfg.dtype]
        theta = self.qaa_theta[name]
        out_map = self.qaa_out[name]
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected input width {self.d_in}, got {x.shape[-1]}")
        if theta.dtype != dtype:  # the adapter's tensors were cast around _apply (e.g. assigned): compute in dtype
            theta = theta.to(dtype)
        xin = x.to(dtype)
        if name in self.qaa_input:
            xin = self.qaa_input[name](xin)
        xin = self.qaa_dropout[name](xin)
        lead = xin.shape[:-1]
        rows = xin.reshape(-1, self.d_in)
        run = active_measurement()  # shots / noise (qaa.measurement), else exact
        if run is None:
            feats, _ = qaa_features_op(rows, theta, *self.qaa_specs[name])
        else:
            feats = run.features(rows, theta, *self.qaa_specs[name])
        if out_map.weight.dtype == dtype:
            out = out_map(feats)
        else:
            out = torch.nn.functional.linear(feats, out_map.weight.to(dtype))
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
        if torch.compiler.is_compiling():
            # A compiled graph is never re-run in Python by a checkpoint's recomputation (the compiler
            # recomputes inside the graph it traced), so there is nothing to check; the graph is guarded on
            # the active adapter and the disabled flag, which it reads below.
            pass
        elif _in_backward():
            if self._state_epoch != self._forward_epoch:
                raise RuntimeError(
                    "QAA layer recomputed in backward (gradient checkpointing) after its active adapter or "
                    "disable_adapter state changed since the forward: the gradients would be those of another "
                    "function. Call backward() before leaving disable_adapter / switching adapters.")
        else:
            self._forward_epoch = self._state_epoch
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled or not self._active:
            return result
        # The branch computes in the adapter's dtype under autocast too (the dtype rule): autocast would run
        # the output map in bfloat16 / float16.
        if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                branch = self._branches(x)
        else:
            branch = self._branches(x)
        return result + branch.to(result.dtype)

    def _branches(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_i w_i * branch_i(x)`` over the active adapters, summed in the widest of their dtypes."""
        total = None
        for name in self._active:
            b = self.branch(x, name)
            w = self._weights.get(name, 1.0)
            if w != 1.0:
                b = b * w
            if total is None:
                total = b
            else:
                wide = torch.promote_types(total.dtype, b.dtype)
                total = total.to(wide) + b.to(wide)
        return total

    def extra_repr(self) -> str:
        cfgs = ", ".join(f"{k}: {c.ansatz} L={c.n_layers} n={self.n_qubits_for(c)} readout={c.readout}"
                         + (f" input={c.input_transform}" if c.input_transform else "")
                         for k, c in self.qaa_configs.items())
        return f"d_in={self.d_in}, d_out={self.d_out}, adapters=[{cfgs}], active={self.active_adapter!r}"


_BASE_TENSORS = ("weight", "bias")


def _base_names_state_dict_hook(module, state_dict, prefix, local_metadata):
    """``state_dict`` hook: ``<prefix>base_layer.weight`` -> ``<prefix>weight`` (and ``bias``), the names of the
    unwrapped layer, so ``save_pretrained`` writes weights the base architecture loads."""
    for t in _BASE_TENSORS:
        key = f"{prefix}base_layer.{t}"
        if key in state_dict:
            state_dict[f"{prefix}{t}"] = state_dict.pop(key)
    return state_dict


def _base_names_load_hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                          error_msgs):
    """``load_state_dict`` pre-hook: accept the unwrapped names (``<prefix>weight``) for the base layer.

    When both names are present (torch.distributed.checkpoint's set_model_state_dict under FSDP2 adds one of them
    beside the other), the one whose tensor type matches the base layer's parameter (a sharded DTensor, or a plain
    tensor) is loaded under the module's own name and the other dropped; with the same type, the module's own
    name (``<prefix>base_layer.weight``) wins."""
    for t in _BASE_TENSORS:
        key, own = f"{prefix}{t}", f"{prefix}base_layer.{t}"
        if key not in state_dict:
            continue
        if own in state_dict:
            target = getattr(module.base_layer, t, None)
            unwrapped = state_dict.pop(key)
            if target is not None and type(unwrapped) is type(target.data) \
                    and type(state_dict[own]) is not type(target.data):
                state_dict[own] = unwrapped
        else:
            state_dict[own] = state_dict.pop(key)
