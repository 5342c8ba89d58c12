"""Control tuners for QAA: how much of QAA's gain a far simpler branch on the same layers already gives.

Both wrap the same target linear layers as QAA (default ``q_proj`` and ``v_proj``) and freeze the base model:

- ``bias``: ``y = W x + b``; ``b`` (``d_out`` values per layer) is trainable and starts at zero. QAA's branch is
  nearly constant over tokens when the embedded states are (docs/design.md), so a bias is the control for
  "the branch only learns an offset".
- ``random_features``: ``y = W x + P(R x / ||x||)``; ``R`` is a fixed Gaussian ``[k, d_in]`` matrix divided by
  ``sqrt(d_in)`` (not trained, saved with the adapter), ``P: Linear(k -> d_out, bias=False)`` is trainable
  and starts at zero. ``k`` defaults to ``ceil(log2 d_in)``, QAA's feature count with the ``<Z>`` readout,
  so the control has QAA's ``P`` and sees the same normalised input, with a random linear map instead of
  the circuit and the measurement. A row with ``||x|| = 0`` gives features 0 (never NaN).

Both start equal to the base model (``b = 0``, ``P = 0``). Adapter folders use the shared layout of
:mod:`qaa.tuners.save_load` with ``peft_type`` ``"CONTROL_BIAS"`` or ``"CONTROL_RANDOM_FEATURES"``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..save_load import ADAPTER_CONFIG, read_adapter_files, save_adapter_files
from ..utils import find_targets, layer_dims, normalise_targets, set_submodule

__all__ = ["CONTROL_KINDS", "BiasControlLinear", "RandomFeatureLinear", "attach_control", "control_modules",
           "save_control", "load_control"]

#: ``kind`` -> ``peft_type`` of the saved adapter folder.
CONTROL_KINDS = {"bias": "CONTROL_BIAS", "random_features": "CONTROL_RANDOM_FEATURES"}


def _default_features(d_in: int) -> int:
    """``ceil(log2 d_in)`` (at least 1): QAA's qubit count, hence its ``<Z>`` feature count."""
    return max(1, (d_in - 1).bit_length())


def _dims(base_layer: nn.Module) -> tuple:
    dims = layer_dims(base_layer)
    if dims is None:
        raise TypeError(f"a control wraps nn.Linear or Conv1D, got {type(base_layer).__name__}")
    return dims


class BiasControlLinear(nn.Module):
    """``y = W x + b`` for a frozen linear layer ``W`` (``nn.Linear`` or ``Conv1D``).

    ``b``: ``control_bias`` of shape ``[d_out]``, float32, zero-initialised, trainable. ``x[..., d_in]`` of
    any float dtype; the output has the base output's dtype.
    """

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.d_in, self.d_out = _dims(base_layer)
        self.control_bias = nn.Parameter(torch.zeros(self.d_out, device=base_layer.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        return result + self.control_bias.to(result.dtype)


class RandomFeatureLinear(nn.Module):
    """``y = W x + P(R x / ||x||)`` for a frozen linear layer ``W``.

    ``R``: buffer ``control_R`` of shape ``[k, d_in]``, float32, fixed; ``P``: ``control_out``,
    ``Linear(k -> d_out, bias=False)``, float32, zero-initialised, trainable. The features are computed in
    float32 from ``x[..., d_in]`` of any float dtype; a row with ``||x|| = 0`` gives features 0. The output
    has the base output's dtype.

    Raises:
        TypeError: ``base_layer`` is not a linear layer.
        ValueError: ``R`` is not ``[k, d_in]`` with ``k >= 1``.
    """

    def __init__(self, base_layer: nn.Module, R: torch.Tensor):
        super().__init__()
        self.base_layer = base_layer
        self.d_in, self.d_out = _dims(base_layer)
        if R.dim() != 2 or R.shape[1] != self.d_in or R.shape[0] < 1:
            raise ValueError(f"R must have shape [k >= 1, {self.d_in}], got {tuple(R.shape)}")
        device = base_layer.weight.device
        self.register_buffer("control_R", R.detach().to(device=device, dtype=torch.float32).clone())
        self.control_out = nn.Linear(R.shape[0], self.d_out, bias=False, device=device, dtype=torch.float32)
        nn.init.zeros_(self.control_out.weight)

    @property
    def n_features(self) -> int:
        return int(self.control_R.shape[0])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``R x / ||x||``: ``x[..., d_in] -> [..., k]`` float32; 0 where ``||x|| = 0``."""
        xf = x.to(torch.float32)
        norms = torch.linalg.vector_norm(xf, dim=-1, keepdim=True)
        # An all-zero row has R x = 0; dividing by 1 instead of 0 keeps it 0 (and its gradient finite).
        return (xf @ self.control_R.T) / torch.where(norms > 0, norms, torch.ones_like(norms))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        return result + self.control_out(self.features(x)).to(result.dtype)


_CONTROL_TYPES = (BiasControlLinear, RandomFeatureLinear)


def control_modules(model: nn.Module) -> list:
    """``[(name, layer)]`` of the control layers of ``model``, in ``named_modules`` order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _CONTROL_TYPES)]


def _check_kind(kind: str) -> None:
    if kind not in CONTROL_KINDS:
        raise ValueError(f"unknown control kind {kind!r} (known: {', '.join(CONTROL_KINDS)})")


def attach_control(model: nn.Module, kind: str, target_modules: Union[str, Sequence[str]] = ("q_proj", "v_proj"),
                   n_features: Optional[int] = None, seed: int = 0) -> nn.Module:
    """Freeze ``model`` and wrap every target linear layer with the control ``kind``, in place.

    Args:
        model: e.g. a transformers causal LM.
        kind: ``"bias"`` or ``"random_features"`` (module docstring).
        target_modules: peft's matching rule (names matched at the end of qualified names, or one regex).
        n_features: ``random_features`` only: ``k`` for every layer; default ``ceil(log2 d_in)`` per layer.
        seed: ``random_features`` only: seed of ``R`` (one generator, layers drawn in ``named_modules``
            order, so equal seeds give equal matrices).

    Returns:
        ``model`` (modified in place), with ``model.control_config`` set (``kind``, ``target_modules``,
        ``n_features``, ``seed``). Trainable parameters: ``bias``: ``sum(d_out)``; ``random_features``:
        ``sum(k * d_out)``.

    Raises:
        ValueError: unknown ``kind``, ``n_features < 1``, ``target_modules`` matches nothing (the message
            lists candidates), or a matched layer already carries a control.
        TypeError: a matched module is not a linear layer.
    """
    _check_kind(kind)
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, int)
                                   or n_features < 1):
        raise ValueError(f"n_features must be None or a positive int, got {n_features!r}")
    targets = normalise_targets(target_modules)
    found = find_targets(model, targets, skip=lambda name, _m: name.endswith(".base_layer"))
    for name, mod in found:
        if isinstance(mod, _CONTROL_TYPES):
            raise ValueError(f"module {name!r} already carries a control")
        if layer_dims(mod) is None:
            raise TypeError(f"target module {name!r} is a {type(mod).__name__}; controls wrap nn.Linear / Conv1D")
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(int(seed))
    for name, mod in found:
        if kind == "bias":
            new = BiasControlLinear(mod)
        else:
            d_in = layer_dims(mod)[0]
            k = n_features if n_features is not None else _default_features(d_in)
            R = torch.randn(k, d_in, generator=generator, dtype=torch.float32) / math.sqrt(d_in)
            new = RandomFeatureLinear(mod, R)
        new.train(mod.training)
        set_submodule(model, name, new)
    model.control_config = {"kind": kind, "target_modules": targets if isinstance(targets, str) else list(targets),
                            "n_features": n_features, "seed": int(seed)}
    return model


def save_control(model: nn.Module, out_dir: Union[str, os.PathLike]) -> Path:
    """Save the control adapter of ``model`` (attached by :func:`attach_control`) into ``out_dir``.

    Tensors: ``<module>.control_bias`` (bias), or ``<module>.control_R`` and ``<module>.control_out.weight``
    (random_features). Returns the folder.

    Raises:
        ValueError: ``model`` carries no control.
    """
    mods = control_modules(model)
    config = getattr(model, "control_config", None)
    if not mods or config is None:
        raise ValueError("model carries no control adapter (use attach_control)")
    kind = config["kind"]
    tensors, modules = {}, {}
    for name, mod in mods:
        if kind == "bias":
            tensors[f"{name}.control_bias"] = mod.control_bias.detach()
        else:
            tensors[f"{name}.control_R"] = mod.control_R.detach()
            tensors[f"{name}.control_out.weight"] = mod.control_out.weight.detach()
        modules[name] = {"d_in": mod.d_in, "d_out": mod.d_out}
        if kind == "random_features":
            modules[name]["n_features"] = mod.n_features
    meta = {"peft_type": CONTROL_KINDS[kind], **config, "modules": modules}
    out = Path(out_dir)
    save_adapter_files(out, meta, tensors)
    return out


def load_control(base_model: nn.Module, adapter_dir: Union[str, os.PathLike], is_trainable: bool = False) -> nn.Module:
    """Rebuild a saved control on ``base_model`` (in place; ``R`` comes from the file) and load its weights.

    Everything is checked before the model is touched.

    Returns:
        ``base_model`` with the control; its parameters frozen unless ``is_trainable``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: not a control adapter; corrupted files; a module missing from ``base_model`` or of other
            sizes; missing, unexpected, misshapen or non-finite tensors.
    """
    cfg_path = os.path.join(adapter_dir, ADAPTER_CONFIG)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"adapter file missing: {cfg_path}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            peft_type = json.load(f).get("peft_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"corrupted adapter config {cfg_path}: {e}") from e
    kinds = {v: k for k, v in CONTROL_KINDS.items()}
    if peft_type not in kinds:
        raise ValueError(f"{cfg_path} is not a control adapter (peft_type={peft_type!r})")
    kind = kinds[peft_type]
    meta, tensors = read_adapter_files(adapter_dir, peft_type)  # verifies the checksum and the pairing
    modules = meta.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise ValueError(f"control adapter config in {adapter_dir} lists no modules")
    names = dict(base_model.named_modules())
    shapes = {}
    for name, info in modules.items():
        mod = names.get(name)
        if mod is None:
            raise ValueError(f"adapter module {name!r} does not exist in {type(base_model).__name__}")
        if isinstance(mod, _CONTROL_TYPES):
            raise ValueError(f"module {name!r} already carries a control")
        dims = layer_dims(mod)
        if dims is None or dims != (info.get("d_in"), info.get("d_out")):
            raise ValueError(f"adapter module {name!r} expects (d_in, d_out)=({info.get('d_in')}, "
                             f"{info.get('d_out')}), the model has {dims}")
        d_in, d_out = dims
        if kind == "bias":
            shapes[f"{name}.control_bias"] = (d_out,)
        else:
            k = info.get("n_features")
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"adapter module {name!r}: invalid n_features {k!r}")
            shapes[f"{name}.control_R"] = (k, d_in)
            shapes[f"{name}.control_out.weight"] = (d_out, k)
    if set(tensors) != set(shapes):
        raise ValueError(f"control weights hold unexpected or missing tensors: {sorted(set(tensors) ^ set(shapes))[:5]}")
    for key, shape in shapes.items():
        t = tensors[key]
        if tuple(t.shape) != shape:
            raise ValueError(f"tensor {key} has shape {tuple(t.shape)}, expected {shape}")
        if not t.is_floating_point() or not torch.isfinite(t).all():
            raise ValueError(f"tensor {key} is not a finite float tensor")
    for p in base_model.parameters():
        p.requires_grad_(False)
    for name in modules:
        mod = names[name]
        if kind == "bias":
            new = BiasControlLinear(mod)
            with torch.no_grad():
                new.control_bias.copy_(tensors[f"{name}.control_bias"])
        else:
            new = RandomFeatureLinear(mod, tensors[f"{name}.control_R"])
            with torch.no_grad():
                new.control_out.weight.copy_(tensors[f"{name}.control_out.weight"])
        own = new.control_bias if kind == "bias" else new.control_out.weight
        own.requires_grad_(is_trainable)
        new.train(mod.training)
        set_submodule(base_model, name, new)
    base_model.control_config = {k: meta[k] for k in ("kind", "target_modules", "n_features", "seed") if k in meta}
    return base_model
