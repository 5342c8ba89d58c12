"""peft-like model API: attach / detach / save / load / disable QAA adapters on any torch model."""
from __future__ import annotations

import contextlib
import re
import types
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ..save_load import read_adapter_files, save_adapter_files
from ..utils import (get_nb_trainable_parameters, layer_dims, linear_candidates, matches_target,
                     print_trainable_parameters, set_submodule)
from .config import PEFT_TYPE, QAAConfig
from .layer import QAALayer, circuit_for

class MergeError(RuntimeError):
    """Raised by merge requests: QAA is non-linear in x and cannot be folded into W."""


def qaa_layers(model: nn.Module) -> Iterator[Tuple[str, QAALayer]]:
    """``(name, layer)`` for every :class:`QAALayer` in ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, QAALayer):
            yield name, mod


def _find_targets(model: nn.Module, config: QAAConfig) -> List[str]:
    targets = []
    for name, mod in model.named_modules():
        if not name or not matches_target(name, config.target_modules):
            continue
        if isinstance(mod, QAALayer) or layer_dims(mod) is not None:
            targets.append(name)
    # drop base layers nested inside already-wrapped QAALayers
    return [t for t in targets if not t.endswith(".base_layer")]


def _merge_refused(*_args, **_kwargs):
    raise MergeError("QAA adapters cannot be merged into the base weights: the branch "
                     "P(readout(U(theta) embed(x))) is non-linear in x (normalisation and measurement), so no "
                     "matrix W' satisfies W' x = W x + branch(x). Keep the adapter attached, or use qaa.detach "
                     "to recover the base model.")


def _install_methods(model: nn.Module) -> None:
    model.print_trainable_parameters = types.MethodType(print_trainable_parameters, model)
    model.get_nb_trainable_parameters = types.MethodType(get_nb_trainable_parameters, model)
    model.merge_and_unload = _merge_refused
    model.merge_adapter = _merge_refused


def _set_trainable(model: nn.Module, trainable_adapter: Optional[str]) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    if trainable_adapter is None:
        return
    for _, layer in qaa_layers(model):
        if trainable_adapter in layer.qaa_configs:
            layer.qaa_theta[trainable_adapter].requires_grad_(True)
            for p in layer.qaa_out[trainable_adapter].parameters():
                p.requires_grad_(True)


def attach(model: nn.Module, config: Optional[QAAConfig] = None, adapter_name: str = "default",
           is_trainable: bool = True) -> nn.Module:
    """Wrap ``config.target_modules`` of ``model`` with QAA layers, in place, and return ``model``.

    The base model is frozen; the new adapter's parameters are trainable (unless ``is_trainable=False``)
    and active. Calling again with another ``adapter_name`` adds a second adapter to the same layers (switch
    with :func:`set_adapter`). Adds ``print_trainable_parameters()`` to the model, and a
    ``merge_and_unload()`` that raises :class:`MergeError` (QAA cannot be merged).

    Raises:
        ValueError: no module matches ``target_modules`` (the message lists candidate names), a matched
            module is not ``nn.Linear``/``Conv1D``, or the adapter name already exists.
    """
    config = config if config is not None else QAAConfig()
    if not isinstance(config, QAAConfig):
        raise TypeError(f"config must be a QAAConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config.validate()
    targets = _find_targets(model, config)
    if not targets:
        raise ValueError(f"target_modules {config.target_modules!r} matched no nn.Linear/Conv1D module. "
                         f"Candidate names: {', '.join(linear_candidates(model)) or '(none)'}")
    existing = getattr(model, "qaa_configs", {})
    if adapter_name in existing:
        raise ValueError(f"adapter {adapter_name!r} is already attached; choose another name")
    generator = None
    if config.seed is not None:
        generator = torch.Generator().manual_seed(int(config.seed))
    # Validate every target before changing anything.
    for name in targets:
        mod = model.get_submodule(name)
        base = mod.base_layer if isinstance(mod, QAALayer) else mod
        d_in, _ = layer_dims(base)
        if config.n_qubits is not None and (1 << config.n_qubits) < d_in:
            raise ValueError(f"n_qubits={config.n_qubits} cannot embed {name} (width {d_in})")
        from ...engine import MAX_QUBITS, qubits_for_dim

        if qubits_for_dim(d_in) > MAX_QUBITS:
            raise ValueError(f"{name}: input width {d_in} needs {qubits_for_dim(d_in)} qubits; the engine "
                             f"supports at most {MAX_QUBITS}")
    for name in targets:
        mod = model.get_submodule(name)
        if isinstance(mod, QAALayer):
            mod.add_adapter(adapter_name, config, generator)
        else:
            set_submodule(model, name, QAALayer(mod, adapter_name, config, generator))
    configs = dict(existing)
    configs[adapter_name] = config
    model.qaa_configs = configs
    model.qaa_active_adapter = adapter_name
    _install_methods(model)
    for _, layer in qaa_layers(model):
        if adapter_name in layer.qaa_configs:
            layer.active_adapter = adapter_name
    _set_trainable(model, adapter_name if is_trainable else None)
    return model


def set_adapter(model: nn.Module, adapter_name: str, is_trainable: Optional[bool] = None) -> None:
    """Make ``adapter_name`` the active adapter of every QAA layer holding it (others use none).

    With ``is_trainable=True`` its parameters become the only trainable ones. Raises KeyError if unknown.
    """
    configs = getattr(model, "qaa_configs", {})
    if adapter_name not in configs:
        raise KeyError(f"no adapter named {adapter_name!r}; attached: {sorted(configs)}")
    for _, layer in qaa_layers(model):
        layer.active_adapter = adapter_name if adapter_name in layer.qaa_configs else None
    model.qaa_active_adapter = adapter_name
    if is_trainable is not None:
        _set_trainable(model, adapter_name if is_trainable else None)


@contextlib.contextmanager
def disable_adapter(model: nn.Module):
    """Context manager: inside it every QAA layer computes the base layer alone."""
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
    for name, layer in list(qaa_layers(model)):
        set_submodule(model, name, layer.base_layer)
    for attr in ("qaa_configs", "qaa_active_adapter", "print_trainable_parameters", "get_nb_trainable_parameters",
                 "merge_and_unload", "merge_adapter"):
        if attr in model.__dict__:
            del model.__dict__[attr]
    return model


def merge(model: nn.Module) -> None:
    """Always raises :class:`MergeError`: QAA is non-linear in x and cannot be merged into W."""
    _merge_refused()


# ---------------------------------------------------------------- save / load
def _adapter_state(model: nn.Module, adapter_name: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, dict]]:
    tensors, modules = {}, {}
    for name, layer in qaa_layers(model):
        if adapter_name not in layer.qaa_configs:
            continue
        circ = layer.circuit(adapter_name)
        tensors[f"{name}.theta"] = layer.qaa_theta[adapter_name].detach().cpu().contiguous()
        tensors[f"{name}.out_proj.weight"] = layer.qaa_out[adapter_name].weight.detach().cpu().contiguous()
        modules[name] = {"d_in": layer.d_in, "d_out": layer.d_out, "n_qubits": circ.n_qubits,
                         "n_params": circ.n_params}
        if adapter_name in layer.qaa_input:
            transform = layer.qaa_input[adapter_name]
            tensors[f"{name}.input_mean"] = transform.mean.detach().cpu().contiguous()
            tensors[f"{name}.input_scale"] = transform.scale.detach().cpu().contiguous()
            modules[name]["input_calibrated"] = bool(transform.calibrated)
    return tensors, modules


def save_adapter(model: nn.Module, save_directory: str, adapter_name: str = "default") -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` for one adapter into a folder.

    Both files are first written to temporary files and only then renamed into place, so a save that fails or
    is interrupted never leaves a half-written file and keeps a previously saved adapter loadable. The weights
    file also embeds the config and a sha256 of the tensors (safetensors metadata); the loader checks both
    (the layout is :mod:`qaa.tuners.save_load`'s). Raises KeyError if the adapter does not exist.
    """
    configs = getattr(model, "qaa_configs", {})
    if adapter_name not in configs:
        raise KeyError(f"no adapter named {adapter_name!r}; attached: {sorted(configs)}")
    tensors, modules = _adapter_state(model, adapter_name)
    from ... import __version__

    meta = configs[adapter_name].to_dict()
    meta.update(modules=modules, qaa_version=__version__)
    save_adapter_files(save_directory, meta, tensors)


def _expected_layout(config: QAAConfig, name: str, info) -> Tuple[int, int, int, int]:
    """``(d_in, d_out, n_params, n_features)`` a saved module entry implies, checked for consistency."""
    from ...engine import n_features, qubits_for_dim

    if not isinstance(info, dict):
        raise ValueError(f"adapter config: entry of module {name!r} is not an object")
    try:
        d_in, d_out, n_qubits, n_params = (int(info[k]) for k in ("d_in", "d_out", "n_qubits", "n_params"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"adapter config: entry of module {name!r} lacks d_in/d_out/n_qubits/n_params ({e})") from e
    if d_in < 1 or d_out < 1:
        raise ValueError(f"adapter config: module {name!r} has invalid sizes d_in={d_in}, d_out={d_out}")
    need = config.n_qubits if config.n_qubits is not None else qubits_for_dim(d_in)
    circ = circuit_for(config.ansatz, need, config.n_layers)
    if n_qubits != circ.n_qubits or n_params != circ.n_params:
        raise ValueError(f"adapter config: module {name!r} records n_qubits={n_qubits}, n_params={n_params}; "
                         f"the config implies {circ.n_qubits} and {circ.n_params}")
    return d_in, d_out, n_params, n_features(circ, config.readout)


def _snapshot(model: nn.Module):
    """What attach can change: the module tree, requires_grad flags, active adapters, the model's qaa attributes."""
    attrs = {k: model.__dict__[k] for k in ("qaa_configs", "qaa_active_adapter", "print_trainable_parameters",
                                             "get_nb_trainable_parameters", "merge_and_unload", "merge_adapter")
             if k in model.__dict__}
    modules = dict(model.named_modules())
    grads = [(p, p.requires_grad) for p in model.parameters()]
    active = [(layer, layer.active_adapter, set(layer.qaa_configs)) for _, layer in qaa_layers(model)]
    return attrs, modules, grads, active


def _restore(model: nn.Module, snap, adapter_name: str) -> None:
    attrs, modules, grads, active = snap
    for name, layer in list(qaa_layers(model)):
        if name not in modules or modules[name] is not layer:  # a layer attach created: put the base back
            set_submodule(model, name, layer.base_layer)
    for layer, prev_active, prev_names in active:
        for extra in set(layer.qaa_configs) - prev_names:
            layer.delete_adapter(extra)
        layer.active_adapter = prev_active
    for p, flag in grads:
        p.requires_grad_(flag)
    for k in ("qaa_configs", "qaa_active_adapter", "print_trainable_parameters", "get_nb_trainable_parameters",
              "merge_and_unload", "merge_adapter"):
        model.__dict__.pop(k, None)
    model.__dict__.update(attrs)


def load_adapter(model: nn.Module, load_directory: str, adapter_name: str = "default",
                 is_trainable: bool = False) -> nn.Module:
    """Attach the adapter saved in ``load_directory`` to ``model`` (a base model or one with other QAA
    adapters) and return the model. Frozen unless ``is_trainable``.

    Everything is validated before the model is touched: a missing, truncated or corrupted file (the weights
    carry a checksum), a config and weights that disagree, a module that does not exist or has another shape,
    or a tensor of the wrong shape or a non-finite value raises (FileNotFoundError / ValueError) and leaves the
    model unchanged (should attaching still fail, the model is restored as it was).
    """
    meta, tensors = read_adapter_files(load_directory, PEFT_TYPE)
    modules = meta.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise ValueError(f"adapter config in {load_directory} lists no modules")
    if adapter_name in getattr(model, "qaa_configs", {}):
        raise ValueError(f"adapter {adapter_name!r} is already attached; choose another name")
    try:
        config = QAAConfig.from_dict({k: v for k, v in meta.items() if k not in ("modules", "qaa_version",
                                                                                "format_version")})
    except TypeError as e:
        raise ValueError(f"invalid adapter config in {load_directory}: {e}") from e
    names = dict(model.named_modules())
    for name, info in modules.items():
        d_in, d_out, n_params, n_feat = _expected_layout(config, name, info)
        mod = names.get(name)
        if mod is None:
            raise ValueError(f"adapter module {name!r} does not exist in this model")
        base = mod.base_layer if isinstance(mod, QAALayer) else mod
        dims = layer_dims(base)
        if dims is None or dims != (d_in, d_out):
            raise ValueError(f"adapter module {name!r} expects (d_in, d_out)=({d_in}, {d_out}), "
                             f"the model has {dims}")
        if isinstance(mod, QAALayer) and adapter_name in mod.qaa_configs:
            raise ValueError(f"adapter {adapter_name!r} is already attached to {name}")
        shapes = [(f"{name}.theta", (n_params,)), (f"{name}.out_proj.weight", (d_out, n_feat))]
        if config.input_transform is not None:
            shapes += [(f"{name}.input_mean", (d_in,)), (f"{name}.input_scale", (d_in,))]
        for key, shape in shapes:
            t = tensors.get(key)
            if t is None or tuple(t.shape) != shape:
                raise ValueError(f"tensor {key} missing or of shape {None if t is None else tuple(t.shape)}, "
                                 f"expected {shape}")
    for k, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"tensor {k} in {load_directory} has dtype {t.dtype}, expected a float dtype")
        if not torch.isfinite(t).all():
            raise ValueError(f"tensor {k} in {load_directory} holds non-finite values")
    expected = {f"{n}.theta" for n in modules} | {f"{n}.out_proj.weight" for n in modules}
    if config.input_transform is not None:
        expected |= {f"{n}.input_mean" for n in modules} | {f"{n}.input_scale" for n in modules}
        for n in modules:
            if not (tensors[f"{n}.input_scale"] > 0).all():
                raise ValueError(f"tensor {n}.input_scale in {load_directory} holds entries <= 0")
    if set(tensors) != expected:
        raise ValueError(f"adapter weights hold unexpected or missing tensors: "
                         f"{sorted(set(tensors) ^ expected)[:5]}")
    # Attach exactly the saved modules, then copy the weights; undo everything if that still fails.
    config = QAAConfig.from_dict({**config.to_dict(), "target_modules": "|".join(re.escape(n) for n in modules)})
    snap = _snapshot(model)
    try:
        attach(model, config, adapter_name=adapter_name, is_trainable=is_trainable)
        with torch.no_grad():
            for name, layer in qaa_layers(model):
                if name not in modules:
                    continue
                th = layer.qaa_theta[adapter_name]
                out = layer.qaa_out[adapter_name].weight
                th.copy_(tensors[f"{name}.theta"].to(th.dtype))
                out.copy_(tensors[f"{name}.out_proj.weight"].to(out.dtype))
                if adapter_name in layer.qaa_input:
                    transform = layer.qaa_input[adapter_name]
                    transform.set_statistics(tensors[f"{name}.input_mean"], tensors[f"{name}.input_scale"])
                    transform.calibrated = bool(modules[name].get("input_calibrated", True))
    except BaseException:
        _restore(model, snap, adapter_name)
        raise
    return model


def param_groups(model: nn.Module, lr: float, theta_lr_ratio: float = 1.0,
                 weight_decay: float = 0.0) -> List[dict]:
    """AdamW parameter groups giving the circuit angles their own learning rate.

    Every trainable ``theta`` of a QAA layer (any adapter) goes into a group with learning rate
    ``lr * theta_lr_ratio``; every other trainable parameter of ``model`` (``P``, or anything else left
    trainable) into a group with ``lr``. Each parameter appears exactly once (shared parameters once);
    frozen parameters are left out; an empty group is omitted. Both groups use ``weight_decay``. Angles are
    periodic and enter through ``cos``/``sin`` of half the angle, unlike ``P``'s weights, so their good step
    size need not be ``P``'s: the ratio lets the two be tuned apart.

    Returns:
        ``[{"params": [...], "lr": lr, "weight_decay": weight_decay, "name": "other"},
        {"params": [...], "lr": lr * theta_lr_ratio, "weight_decay": weight_decay, "name": "qaa_theta"}]``
        (``name`` is only a label; torch optimizers keep extra keys).

    Raises:
        ValueError: ``lr`` not a finite number > 0, ``theta_lr_ratio`` or ``weight_decay`` not a finite number
            >= 0, or ``model`` has no trainable parameter.
    """
    import math

    for what, value, low_ok in (("lr", lr, False), ("theta_lr_ratio", theta_lr_ratio, True),
                                ("weight_decay", weight_decay, True)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (value == 0 and not low_ok):
            raise ValueError(f"{what} must be a finite number {'>=' if low_ok else '>'} 0, got {value!r}")
    theta_ids = {id(p) for _, layer in qaa_layers(model) for p in layer.qaa_theta.values()}
    seen, thetas, others = set(), [], []
    for p in model.parameters():  # model.parameters() yields each shared parameter once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (thetas if id(p) in theta_ids else others).append(p)
    if not seen:
        raise ValueError("model has no trainable parameters")
    groups = []
    if others:
        groups.append({"params": others, "lr": float(lr), "weight_decay": float(weight_decay), "name": "other"})
    if thetas:
        groups.append({"params": thetas, "lr": float(lr) * float(theta_lr_ratio),
                       "weight_decay": float(weight_decay), "name": "qaa_theta"})
    return groups


def detach_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove one adapter; layers left with no adapter are unwrapped."""
    for name, layer in list(qaa_layers(model)):
        if adapter_name in layer.qaa_configs:
            layer.delete_adapter(adapter_name)
            if not layer.qaa_configs:
                set_submodule(model, name, layer.base_layer)
    configs = dict(getattr(model, "qaa_configs", {}))
    configs.pop(adapter_name, None)
    model.qaa_configs = configs
    if getattr(model, "qaa_active_adapter", None) == adapter_name:
        model.qaa_active_adapter = next(iter(configs), None)
