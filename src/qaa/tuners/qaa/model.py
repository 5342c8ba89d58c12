"""peft-like model API, the adapter lifecycle: attach / detach / switch / disable QAA adapters on any torch model,
with rollback of a failed attach. Saving and loading are :mod:`.persistence`'s."""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..utils import get_nb_trainable_parameters, layer_dims, print_trainable_parameters, set_submodule
from .config import QAAConfig, check_adapter_name
from .distributed import is_distributed_wrapper, unwrap_model
from .hf_compat import register_with_peft
from .layer import QAALayer
from .targets import check_targets, qaa_layers

#: Attributes attach sets on the model (removed by detach).
_MODEL_ATTRS = ("qaa_configs", "qaa_active_adapter", "qaa_adapter_weights", "print_trainable_parameters",
                "get_nb_trainable_parameters", "merge_and_unload", "merge_adapter", "save_pretrained", "qaa_set_adapter", "qaa_disable_adapter",
                "qaa_base_model")


class AdapterConfigs(Mapping):
    """``model.qaa_configs``: adapter name -> the adapter's :class:`QAAConfig`, read-only (the mapping and the
    configs: setting a field raises AttributeError). The layers hold the same read-only configs, so what runs
    and what :func:`save_adapter` writes cannot differ. ``dict(model.qaa_configs)`` gives a plain dict."""

    def __init__(self, configs=()):
        self._configs = {name: (cfg if cfg.__dict__.get("_read_only") else cfg.read_only_copy())
                         for name, cfg in dict(configs).items()}

    def __getitem__(self, name: str) -> QAAConfig:
        return self._configs[name]

    def __iter__(self):
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def __repr__(self) -> str:
        return f"AdapterConfigs({self._configs!r})"


class MergeError(RuntimeError):
    """Raised by merge requests: QAA is non-linear in x and cannot be folded into W."""


def _merge_refused(*_args, **_kwargs):
    raise MergeError("QAA adapters cannot be merged into the base weights: the branch "
                     "P(readout(U(theta) embed(x))) is non-linear in x (normalisation and measurement), so no "
                     "matrix W' satisfies W' x = W x + branch(x). Keep the adapter attached, or use qaa.detach "
                     "to recover the base model.")


def _base_model(model: nn.Module) -> nn.Module:
    """``model.qaa_base_model()``: the model the adapters live in (attach works in place, so the model itself)."""
    return model


def _save_pretrained(model: nn.Module, save_directory, *args, **kwargs):
    from .persistence import save_pretrained  # persistence builds on this module: imported when called

    return save_pretrained(model, save_directory, *args, **kwargs)


def _install_methods(model: nn.Module) -> None:
    # functools.partial of module-level functions (not bound methods): the model stays picklable. The adapter
    # methods carry a ``qaa_`` prefix: transformers models have their own ``set_adapter`` / ``disable_adapters``
    # (for peft adapters), which an attached model must keep.
    model.qaa_set_adapter = functools.partial(set_adapter, model)
    model.qaa_disable_adapter = functools.partial(disable_adapter, model)
    model.qaa_base_model = functools.partial(_base_model, model)
    model.print_trainable_parameters = functools.partial(print_trainable_parameters, model)
    model.get_nb_trainable_parameters = functools.partial(get_nb_trainable_parameters, model)
    model.merge_and_unload = _merge_refused
    model.merge_adapter = _merge_refused
    if callable(getattr(type(model), "save_pretrained", None)):
        model.save_pretrained = functools.partial(_save_pretrained, model)


def _adapter_parameters(model: nn.Module, adapter_name: str) -> List[nn.Parameter]:
    params = []
    for _, layer in qaa_layers(model):
        if adapter_name in layer.qaa_configs:
            params.append(layer.qaa_theta[adapter_name])
            params.extend(layer.qaa_out[adapter_name].parameters())
    return params


def _foreign_adapter_parameters(model: nn.Module) -> set:
    """ids of the parameters of other PEFT methods' adapters in ``model`` (peft's tuner layers, e.g. LoRA's
    ``lora_A`` / ``lora_B``): modules naming their adapter parts in ``adapter_layer_names``, as peft's
    ``BaseTunerLayer`` does. Found by that attribute alone, so peft need not be installed."""
    ids = set()
    for mod in model.modules():
        if isinstance(mod, QAALayer):
            continue
        names = getattr(mod, "adapter_layer_names", None)
        if not isinstance(names, (tuple, list)):
            continue
        for part in names:
            sub = getattr(mod, part, None)
            if isinstance(sub, nn.Module):
                ids.update(id(p) for p in sub.parameters())
    return ids


def _set_trainable(model: nn.Module, adapter_name: str, trainable: bool, others_frozen: bool) -> None:
    """Set ``requires_grad`` of adapter ``adapter_name``'s parameters; with ``others_frozen`` every other QAA
    adapter is frozen. Parameters outside the adapters are never touched here."""
    if others_frozen:
        for _, layer in qaa_layers(model):
            for name in layer.qaa_configs:
                if name != adapter_name:
                    layer.qaa_theta[name].requires_grad_(False)
                    for p in layer.qaa_out[name].parameters():
                        p.requires_grad_(False)
    for p in _adapter_parameters(model, adapter_name):
        p.requires_grad_(trainable)


def _activate(model: nn.Module, adapter_name, weights: Optional[Sequence[float]] = None) -> None:
    """``adapter_name`` (a name, or a list of names with optional output ``weights``) active on every layer,
    each layer adding those of them it holds; a layer holding none runs no adapter. ``model.qaa_active_adapter``
    is the name, or the list when several are active; ``model.qaa_adapter_weights`` maps each active adapter to
    its weight."""
    names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
    w = [1.0] * len(names) if weights is None else [float(v) for v in weights]
    for _, layer in qaa_layers(model):
        held = [(n, v) for n, v in zip(names, w) if n in layer.qaa_configs]
        layer.set_active_adapters([n for n, _ in held], [v for _, v in held])
    model.qaa_active_adapter = names[0] if len(names) == 1 else names
    model.qaa_adapter_weights = dict(zip(names, w))


def _active_names(model: nn.Module) -> List[str]:
    """The model's active adapters as a list (empty when none)."""
    active = getattr(model, "qaa_active_adapter", None)
    return [] if active is None else ([active] if isinstance(active, str) else list(active))


def _active_weights(model: nn.Module) -> List[float]:
    weights = getattr(model, "qaa_adapter_weights", None) or {}
    return [float(weights.get(n, 1.0)) for n in _active_names(model)]


def attach(model: nn.Module, config: Optional[QAAConfig] = None, adapter_name: str = "default",
           is_trainable: bool = True) -> nn.Module:
    """Wrap ``config.target_modules`` of ``model`` with QAA layers, in place, and return ``model``.

    The new adapter becomes active on every layer (layers without it run no adapter) and, unless
    ``is_trainable=False``, the only trainable adapter. The first attach freezes every parameter of the base
    model except other PEFT methods' adapters (peft tuner layers, e.g. LoRA on other modules, keep training);
    later ones leave parameters outside the adapters as they are (e.g. an ``lm_head`` the user unfroze).
    ``model`` may be wrapped by peft (``PeftModel``) or ``torch.compile``: QAA attaches to the model inside, and
    module names are that model's (docs/design.md section 8).
    The model keeps its own copy of ``config``: editing or reusing the object afterwards changes nothing.
    Calling again with another ``adapter_name`` adds a second adapter (switch with :func:`set_adapter`). Adds
    ``qaa_set_adapter(name, is_trainable=None)``, ``qaa_disable_adapter()`` and ``qaa_base_model()`` (prefixed:
    transformers' own ``set_adapter`` / ``disable_adapters`` stay as they are),
    ``print_trainable_parameters()``, a ``merge_and_unload()`` that raises :class:`MergeError`, and (for
    transformers models) a ``save_pretrained`` that writes the base weights under their own names and the
    adapters beside them. A failing attach leaves the model as it was.

    Raises:
        TypeError: ``config`` is not a QAAConfig or ``model`` not an ``nn.Module``.
        ValueError: no module matches ``target_modules`` (the message lists candidate names), an invalid
            regular expression, a listed module that is not ``nn.Linear``/``Conv1D``, nested targets, the
            output embeddings as a target, a layer too wide for the engine, or the adapter name already exists.
    """
    config = config if config is not None else QAAConfig()
    if not isinstance(config, QAAConfig):
        raise TypeError(f"config must be a QAAConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    register_with_peft()
    outer, model = model, (model if is_distributed_wrapper(model) else unwrap_model(model))
    config.validate()
    config = config.read_only_copy()  # the model's own copy (the caller may edit or reuse theirs)
    check_adapter_name(adapter_name)
    existing = getattr(model, "qaa_configs", {})
    if adapter_name in existing:
        raise ValueError(f"adapter {adapter_name!r} is already attached; choose another name")
    targets = check_targets(model, config)
    generator = None
    if config.seed is not None:
        generator = torch.Generator().manual_seed(int(config.seed))
    # Validate every target before changing anything.
    from ...engine import MAX_QUBITS, qubits_for_dim

    for name in targets:
        mod = model.get_submodule(name)
        base = mod.base_layer if isinstance(mod, QAALayer) else mod
        d_in, _ = layer_dims(base)
        if config.n_qubits is not None and (1 << config.n_qubits) < d_in:
            raise ValueError(f"n_qubits={config.n_qubits} cannot embed {name} (width {d_in})")
        if qubits_for_dim(d_in) > MAX_QUBITS:
            raise ValueError(f"{name}: input width {d_in} needs {qubits_for_dim(d_in)} qubits; the engine "
                             f"supports at most {MAX_QUBITS}")
    first = not existing
    snap = _snapshot(model)
    try:
        if first:
            keep = _foreign_adapter_parameters(model)  # e.g. peft LoRA on other modules keeps training
            for p in model.parameters():
                if id(p) not in keep:
                    p.requires_grad_(False)
        for name in targets:
            mod = model.get_submodule(name)
            if isinstance(mod, QAALayer):
                mod.add_adapter(adapter_name, config, generator)
            else:
                set_submodule(model, name, QAALayer(mod, adapter_name, config, generator))
        configs = dict(existing)
        configs[adapter_name] = config
        model.qaa_configs = AdapterConfigs(configs)
        _install_methods(model)
        _activate(model, adapter_name)
        _set_trainable(model, adapter_name, is_trainable, others_frozen=is_trainable)
    except BaseException:
        _restore(model, snap)
        raise
    return outer


def set_adapter(model: nn.Module, adapter_name, is_trainable: Optional[bool] = None,
                weights: Optional[Sequence[float]] = None) -> None:
    """Make ``adapter_name`` the active adapter of every QAA layer holding it (the others run no adapter), or,
    given a list of names, make those adapters active together: each layer then adds
    ``sum_i weights[i] * branch_i(x)`` over the listed adapters it holds (as peft sums active LoRA adapters).

    Args:
        adapter_name: a name, or a non-empty list / tuple of distinct names.
        is_trainable: ``None`` (default) changes no ``requires_grad``; ``True`` makes the named adapters the only
            trainable ones (their sum trains together); ``False`` freezes them (other adapters unchanged).
            Parameters outside the adapters are never touched.
        weights: optional output weight per name (finite real numbers, one per name; default all 1.0).

    Raises:
        KeyError: a name that is not attached.
        TypeError: a name that is not a string, or a weight that is not a real number.
        ValueError: an empty list, a repeated name, a weights list of another length, or a non-finite weight.

    Also installed as ``model.qaa_set_adapter(adapter_name, is_trainable, weights)``.
    """
    model = unwrap_model(model)
    configs = getattr(model, "qaa_configs", {})
    names = _check_active(adapter_name, configs)
    w = _check_weights(weights, names)
    _activate(model, names if len(names) > 1 else names[0], w)
    if is_trainable is not None:
        if is_trainable:
            _set_trainable(model, names[0], True, others_frozen=True)
            for n in names[1:]:
                _set_trainable(model, n, True, others_frozen=False)
        else:
            for n in names:
                _set_trainable(model, n, False, others_frozen=False)


def _check_active(adapter_name, configs) -> List[str]:
    if isinstance(adapter_name, str):
        names = [adapter_name]
    elif isinstance(adapter_name, (list, tuple)):
        names = list(adapter_name)
        if not names:
            raise ValueError("set_adapter needs at least one adapter name, got an empty list")
    else:
        raise TypeError(f"adapter_name must be a string or a list of strings, got {type(adapter_name).__name__}")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"adapter names must be strings, got {n!r} ({type(n).__name__})")
        if n not in configs:
            raise KeyError(f"no adapter named {n!r}; attached: {sorted(configs)}")
    if len(set(names)) != len(names):
        raise ValueError(f"adapter names repeat: {names}")
    return names


def _check_weights(weights, names: List[str]) -> Optional[List[float]]:
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"weights must be a list of numbers, one per adapter, got {type(weights).__name__}")
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} weights for {len(names)} adapters ({names})")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise TypeError(f"adapter weights must be real numbers, got {w!r} ({type(w).__name__})")
        if not math.isfinite(w):
            raise ValueError(f"adapter weights must be finite, got {w!r}")
        out.append(float(w))
    return out


@contextlib.contextmanager
def disable_adapter(model: nn.Module):
    """Context manager: inside it every QAA layer computes the base layer alone (other PEFT methods' adapters
    are not affected). Also installed as ``model.qaa_disable_adapter()``."""
    layers = [layer for _, layer in qaa_layers(model)]
    previous = [layer.disabled for layer in layers]
    try:
        for layer in layers:
            layer.disabled = True
        yield model
    finally:
        for layer, prev in zip(layers, previous):
            layer.disabled = prev


def detach(model: nn.Module) -> nn.Module:
    """Remove every QAA layer (all adapters), restoring the base layers in place; returns the model.

    Base parameters keep the ``requires_grad`` state attach gave them (frozen).
    """
    outer, model = model, unwrap_model(model)
    layers = list(qaa_layers(model))
    # Outermost first; a QAA layer's internals are never wrapped, so every name still resolves.
    for name, layer in layers:
        set_submodule(model, name, layer.base_layer)
    for attr in _MODEL_ATTRS:
        model.__dict__.pop(attr, None)
    return outer


def merge(model: nn.Module) -> None:
    """Always raises :class:`MergeError`: QAA is non-linear in x and cannot be merged into W."""
    _merge_refused()


def _snapshot(model: nn.Module):
    """What attach can change: the module tree, requires_grad flags, active adapters, the model's qaa attributes."""
    attrs = {k: model.__dict__[k] for k in _MODEL_ATTRS if k in model.__dict__}
    modules = dict(model.named_modules(remove_duplicate=False))
    grads = [(p, p.requires_grad) for p in model.parameters()]
    active = [(layer, layer.active_adapters, [layer.adapter_weights[n] for n in layer.active_adapters],
               set(layer.qaa_configs)) for _, layer in qaa_layers(model)]
    return attrs, modules, grads, active


def _restore(model: nn.Module, snap) -> None:
    attrs, modules, grads, active = snap
    for name, layer in list(qaa_layers(model)):
        if name not in modules or modules[name] is not layer:  # a layer attach created: put the base back
            set_submodule(model, name, layer.base_layer)
    for layer, prev_active, prev_weights, prev_names in active:
        for extra in set(layer.qaa_configs) - prev_names:
            layer.delete_adapter(extra)
        layer.set_active_adapters(prev_active, prev_weights)
    for p, flag in grads:
        p.requires_grad_(flag)
    for k in _MODEL_ATTRS:
        model.__dict__.pop(k, None)
    model.__dict__.update(attrs)


def reset_adapter_parameters(model: nn.Module, adapter_name: Optional[str] = None, device=None) -> nn.Module:
    """Initialise the adapters of ``model`` (all, or ``adapter_name``) exactly as :func:`attach` did, and return
    ``model``: the path that materialises a QAA model built on the meta device.

    Per adapter, ``theta`` is drawn again layer by layer in attach's order from a generator seeded with the
    adapter's ``config.seed`` (the same values attach drew, bit for bit); ``P`` is zeroed; an input transform
    returns to the identity. With ``seed=None`` the angles come from torch's global generator (fresh values,
    as attach's). Adapter tensors on the meta device are first materialised on ``device`` (default: each base
    layer's device, the CPU where that is meta too). Base weights are not touched: load them as usual
    (``load_state_dict``, ``from_pretrained``) or after ``model.to_empty(device=...)``. Typical use::

        with torch.device("meta"):
            model = qaa.attach(build_model(), config)
        model.to_empty(device="cpu")
        model.load_state_dict(base_state_dict, strict=False)   # the base weights
        qaa.reset_adapter_parameters(model)                     # the adapters, as a normal attach made them

    Raises:
        KeyError: ``adapter_name`` is not attached.
    """
    inner = unwrap_model(model)
    configs = getattr(inner, "qaa_configs", {})
    names = list(configs) if adapter_name is None else [adapter_name]
    for name in names:
        if name not in configs:
            raise KeyError(f"no adapter named {name!r}; attached: {sorted(configs)}")
        seed = configs[name].seed
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        for _, layer in qaa_layers(inner):
            if name in layer.qaa_configs:
                layer.reset_adapter_parameters(name, generator, device)
    return model


def detach_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove one adapter; layers left with no adapter are unwrapped. If it was the active adapter, the first
    remaining one becomes active (on every layer, as :func:`set_adapter`). Raises KeyError if unknown."""
    model = unwrap_model(model)
    if adapter_name not in getattr(model, "qaa_configs", {}):
        raise KeyError(f"no adapter named {adapter_name!r}; attached: {sorted(getattr(model, 'qaa_configs', {}))}")
    for name, layer in list(qaa_layers(model)):
        if adapter_name in layer.qaa_configs:
            layer.delete_adapter(adapter_name)
            if not layer.qaa_configs:
                set_submodule(model, name, layer.base_layer)
    configs = dict(getattr(model, "qaa_configs", {}))
    configs.pop(adapter_name, None)
    if not configs:  # nothing left: the model is the base model again
        for attr in _MODEL_ATTRS:
            model.__dict__.pop(attr, None)
        return
    model.qaa_configs = AdapterConfigs(configs)
    names, weights = _active_names(model), _active_weights(model)
    kept = [(n, w) for n, w in zip(names, weights) if n != adapter_name and n in configs]
    if not kept:
        kept = [(next(iter(configs)), 1.0)]
    _activate(model, [n for n, _ in kept] if len(kept) > 1 else kept[0][0], [w for _, w in kept])
