"""SoRA: sparse low-rank adaptation with a per-rank gate, pruned after training.

Reference: N. Ding, X. Lv, Q. Wang, Y. Chen, B. Zhou, Z. Liu, M. Sun, "Sparse Low-rank Adaptation of
Pre-trained Language Models", EMNLP 2023 (arXiv:2311.11696), and its public release
(github.com/TsinghuaC3I/SoRA, files ``src/lora.py``, ``src/sparse_optimizer.py``, ``src/trainer.py``).

A wrapped layer computes, for ``x`` of shape ``(..., d_in)``::

    y = W x + scaling * B (g * (A x)),      A: (r_max, d_in),  g: (r_max,),  B: (d_out, r_max)

``W`` (and its bias) stays frozen. After every optimizer step the gate takes a proximal (soft-threshold)
step ``g <- sign(g) * max(|g| - xi, 0)``, which drives unneeded ranks exactly to zero. After training,
:func:`prune_sora` drops the ranks whose gate is zero and folds ``g`` into ``B``, leaving a plain LoRA
layer (:class:`LowRankLinear`) of the surviving rank that computes the same function.

Typical loop::

    model = attach_sora(model, SoRAConfig())
    opt = torch.optim.AdamW(sora_param_groups(model, weight_decay=0.01), lr=2e-4)
    for batch in data:
        loss = model(**batch).loss
        if cfg.lambda_l1:
            loss = loss + cfg.lambda_l1 * l1_penalty(model)
        loss.backward(); opt.step(); opt.zero_grad()
        proximal_step(model, cfg.xi)
    prune_sora(model); print(sora_rank_summary(model))
    save_sora(model, "out/")
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..save_load import read_adapter_files, save_adapter_files
from ..utils import LINEAR_TYPES, find_targets, layer_dims, set_submodule
from .config import PEFT_TYPE, SoRAConfig
from .layer import LowRankLinear, SoRALinear, adapter_dtype

__all__ = [
    "attach_sora", "sora_modules", "sora_gates", "sora_param_groups", "proximal_step", "l1_penalty", "prune_sora",
    "sora_rank_summary", "save_sora", "load_sora",
]


def attach_sora(model: nn.Module, config: SoRAConfig | None = None) -> nn.Module:
    """Freeze ``model`` and wrap every target layer in a :class:`SoRALinear`, in place.

    Every parameter of ``model`` gets ``requires_grad=False``; only the new ``sora_A``, ``sora_B`` and
    ``sora_gate`` are trainable. The config is kept as ``model.sora_config``.

    Args:
        model: e.g. a transformers causal LM.
        config: :class:`SoRAConfig`; defaults to ``SoRAConfig()``.

    Returns:
        ``model`` itself (modified in place).

    Raises:
        TypeError: ``config`` is not a :class:`SoRAConfig`, or a matched module is not a linear layer.
        ValueError: ``target_modules`` matches nothing (the message lists the candidate linear layer names),
            or a matched layer is already adapted.
    """
    config = SoRAConfig() if config is None else config
    if not isinstance(config, SoRAConfig):
        raise TypeError(f"config must be a SoRAConfig, got {type(config).__name__}")
    targets = find_targets(model, config.target_modules)
    for name, mod in targets:
        if isinstance(mod, (SoRALinear, LowRankLinear)):
            raise ValueError(f"module {name!r} already carries a SoRA adapter")
        if not isinstance(mod, LINEAR_TYPES):
            raise TypeError(f"target module {name!r} is a {type(mod).__name__}; SoRA wraps nn.Linear / Conv1D only")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in targets:
        set_submodule(model, name, SoRALinear(mod, config.r_max, config.alpha, config.dropout, config.gate_init))
    model.sora_config = config
    return model


def sora_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(qualified_name, module)]`` of the :class:`SoRALinear` and :class:`LowRankLinear` layers, in
    ``named_modules`` order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (SoRALinear, LowRankLinear))]


def _require_gated(model: nn.Module) -> list[SoRALinear]:
    mods = [m for _, m in model.named_modules() if isinstance(m, SoRALinear)]
    if not mods:
        raise ValueError("model has no SoRALinear layer (call attach_sora first; pruned layers have no gate)")
    return mods


def sora_gates(model: nn.Module) -> list[nn.Parameter]:
    """The gate parameters ``g`` (each of shape ``(r_max,)``) of every :class:`SoRALinear` in ``model``.

    Raises:
        ValueError: ``model`` has no SoRALinear layer.
    """
    return [m.sora_gate for m in _require_gated(model)]


def sora_param_groups(model: nn.Module, weight_decay: float = 0.0, gate_lr: float | None = None) -> list[dict]:
    """Optimizer parameter groups: trainable non-gate parameters with ``weight_decay``, gates without.

    Weight decay on ``g`` would add an L2 shrink on top of the proximal L1 step; the SoRA release keeps the
    gates in a separate optimizer without weight decay (``src/trainer.py``, ``create_optimizer``), optionally
    with their own learning rate (``sparse_lr``), which ``gate_lr`` reproduces.

    Returns:
        a list of ``{"params": [...], "weight_decay": float[, "lr": float]}`` dicts (empty groups omitted).

    Raises:
        ValueError: ``model`` has no SoRALinear layer, or ``weight_decay < 0`` / ``gate_lr <= 0``.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if gate_lr is not None and gate_lr <= 0:
        raise ValueError(f"gate_lr must be > 0, got {gate_lr}")
    gate_ids = {id(g) for g in sora_gates(model)}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
    gates = [p for p in model.parameters() if p.requires_grad and id(p) in gate_ids]
    groups: list[dict] = []
    if others:
        groups.append({"params": others, "weight_decay": float(weight_decay)})
    if gates:
        g: dict = {"params": gates, "weight_decay": 0.0}
        if gate_lr is not None:
            g["lr"] = float(gate_lr)
        groups.append(g)
    return groups


@torch.no_grad()
def proximal_step(model: nn.Module, xi: float, lr: float | None = None) -> int:
    """Soft-threshold every gate in place: ``g <- sign(g) * max(|g| - t, 0)``; call after ``optimizer.step()``.

    The threshold is ``t = xi`` (default), the absolute per-step threshold of docs/design.md and of the
    optimizer the SoRA release trains with (``src/sparse_optimizer.py``: it subtracts ``sparse_lambda_2``
    itself, not scaled by the learning rate). The paper writes the proximal step as ``T_{eta_t * xi}``
    (threshold scaled by the step size; the release keeps that variant in
    ``src/sparse_optimizer_multiply_lr.py``); pass ``lr`` to use ``t = xi * lr``. The default keeps the
    sparsification speed independent of the learning-rate schedule, so it is the same for every run of the
    comparison.

    Entries with ``|g| <= t`` become exactly ``0``; the others move ``t`` towards zero. ``t`` is cast to the
    gate dtype before the comparison.

    Args:
        model: a model with :class:`SoRALinear` layers.
        xi: threshold (>= 0).
        lr: optional step size multiplying ``xi`` (> 0).

    Returns:
        the number of non-zero gate entries over the whole model after the step.

    Raises:
        ValueError: no SoRALinear layer, ``xi < 0``/non-finite, or ``lr <= 0``/non-finite.
    """
    if not math.isfinite(xi) or xi < 0:
        raise ValueError(f"xi must be finite and >= 0, got {xi}")
    if lr is not None and (not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    threshold = xi if lr is None else xi * lr
    active = 0
    for g in sora_gates(model):
        t = torch.tensor(threshold, dtype=g.dtype, device=g.device)
        shrunk = torch.clamp(g.abs() - t, min=0)
        g.copy_(torch.where(shrunk > 0, torch.sign(g) * shrunk, torch.zeros_like(g)))  # +0.0, never -0.0
        active += int(torch.count_nonzero(g).item())
    return active


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Mean absolute gate value ``sum_l sum_i |g_{l,i}| / (number of gate entries)``: a 0-dim tensor that
    carries gradient to the gates. Multiply by :attr:`SoRAConfig.lambda_l1` and add to the loss; the
    normalisation by the entry count is the SoRA release's (``src/trainer.py``, ``compute_loss``).

    Raises:
        ValueError: ``model`` has no SoRALinear layer.
    """
    gates = sora_gates(model)
    total = sum(g.abs().sum() for g in gates)
    count = sum(g.numel() for g in gates)
    return total / count


@torch.no_grad()
def prune_sora(model: nn.Module) -> nn.Module:
    """Replace every :class:`SoRALinear` by a :class:`LowRankLinear` that keeps only the ranks with a
    non-zero gate, with the gate folded into ``B``: ``lora_A = A[keep]``, ``lora_B = B[:, keep] * g[keep]``.

    Since ``B (g * (A x)) = (B diag(g)) (A x)`` and dropped ranks contribute ``0``, the pruned model computes
    the same outputs up to floating-point round-off of the reordered products. Trainability of the new
    factors follows the gate's ``requires_grad``. Already pruned layers are left as they are.

    Returns:
        ``model`` itself (modified in place).

    Raises:
        ValueError: ``model`` has no SoRALinear layer.
    """
    _require_gated(model)
    for name, mod in [(n, m) for n, m in model.named_modules() if isinstance(m, SoRALinear)]:
        keep = torch.nonzero(mod.sora_gate != 0, as_tuple=False).flatten()
        a = mod.sora_A.index_select(0, keep)
        b = mod.sora_B.index_select(1, keep) * mod.sora_gate.index_select(0, keep)
        new = LowRankLinear(mod.base, a, b, mod.scaling, mod.r_max, mod.dropout_p,
                            requires_grad=mod.sora_gate.requires_grad)
        new.train(mod.training)
        set_submodule(model, name, new)
    return model


def sora_rank_summary(model: nn.Module) -> dict[str, dict[str, int]]:
    """Remaining ranks per adapted layer.

    Returns:
        ``{qualified_name: {"rank": r, "r_max": r_max}}`` where ``rank`` is the number of non-zero gates of
        a :class:`SoRALinear` or the rank of a pruned :class:`LowRankLinear`.

    Raises:
        ValueError: ``model`` has no SoRA layer.
    """
    mods = sora_modules(model)
    if not mods:
        raise ValueError("model has no SoRA layer (call attach_sora first)")
    out: dict[str, dict[str, int]] = {}
    for name, mod in mods:
        rank = mod.active_rank() if isinstance(mod, SoRALinear) else mod.rank
        out[name] = {"rank": rank, "r_max": mod.r_max}
    return out


def save_sora(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Save the SoRA adapter (gated or pruned layers) of ``model`` to ``out_dir``.

    Writes ``adapter_model.safetensors`` (per layer ``<name>.sora_A/.sora_B/.sora_gate`` or, when pruned,
    ``<name>.lora_A/.lora_B``, in the parameters' dtype) and ``adapter_config.json`` (``peft_type: "SORA"``,
    the :class:`SoRAConfig` fields, and under ``modules`` per layer kind, rank, r_max, scaling and shapes), in
    the layout and with the atomic, checksummed write of :mod:`qaa.tuners.save_load`.

    Returns:
        the output folder as a ``Path`` (created if needed).

    Raises:
        ValueError: ``model`` has no SoRA layer.
    """
    mods = sora_modules(model)
    if not mods:
        raise ValueError("model has no SoRA layer to save (call attach_sora first)")
    config = getattr(model, "sora_config", None)
    if not isinstance(config, SoRAConfig):
        first = mods[0][1]
        config = SoRAConfig(target_modules=sorted({n.rsplit(".", 1)[-1] for n, _ in mods}), r_max=first.r_max,
                            alpha=first.scaling * first.r_max, dropout=first.dropout_p)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name, mod in mods:
        if isinstance(mod, SoRALinear):
            params = {"sora_A": mod.sora_A, "sora_B": mod.sora_B, "sora_gate": mod.sora_gate}
            kind, rank = "sora", mod.r_max
        else:
            params = {"lora_A": mod.lora_A, "lora_B": mod.lora_B}
            kind, rank = "pruned", mod.rank
        for key, p in params.items():
            tensors[f"{name}.{key}"] = p.detach().to("cpu").contiguous().clone()
        layers[name] = {"kind": kind, "rank": rank, "r_max": mod.r_max, "scaling": mod.scaling,
                        "in_features": mod.in_features, "out_features": mod.out_features,
                        "dtype": str(next(iter(params.values())).dtype).replace("torch.", "")}
    meta = {"peft_type": PEFT_TYPE, **config.to_dict(), "modules": layers}
    out = Path(out_dir)
    save_adapter_files(out, meta, tensors)
    return out


def load_sora(base_model: nn.Module, adapter_dir: str | os.PathLike, is_trainable: bool = False) -> nn.Module:
    """Rebuild a saved SoRA adapter on ``base_model`` (in place) and load its weights.

    The layers named in ``adapter_config.json`` are wrapped (as :class:`SoRALinear` or, for pruned layers,
    :class:`LowRankLinear` of the saved rank); all base parameters are frozen. Tensors are cast to the
    adapter dtype of each layer.

    Args:
        base_model: the same architecture the adapter was trained on, without adapters.
        adapter_dir: folder written by :func:`save_sora`.
        is_trainable: make the adapter parameters trainable (default: frozen, for evaluation).

    Returns:
        ``base_model`` with the adapter (``model.sora_config`` set).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: not a SoRA adapter, unsupported format version, a layer missing from ``base_model``,
            shape mismatch, or missing / unexpected tensors.
    """
    meta, tensors = read_adapter_files(adapter_dir, PEFT_TYPE)
    layers = meta.get("modules")
    if not isinstance(layers, dict) or not layers:
        raise ValueError(f"SoRA adapter config in {adapter_dir} lists no modules")
    try:
        config = SoRAConfig.from_dict({k: v for k, v in meta.items()
                                       if k not in ("peft_type", "format_version", "modules")})
    except TypeError as e:
        raise ValueError(f"invalid SoRA adapter config in {adapter_dir}: {e}") from e

    expected: set[str] = set()
    for name, info in layers.items():
        keys = ("sora_A", "sora_B", "sora_gate") if info["kind"] == "sora" else ("lora_A", "lora_B")
        expected.update(f"{name}.{k}" for k in keys)
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(f"SoRA weights do not match the config: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")

    modules = dict(base_model.named_modules())
    for name, info in layers.items():
        if name not in modules:
            raise ValueError(f"layer {name!r} of the adapter does not exist in {type(base_model).__name__}")
        base = modules[name]
        if isinstance(base, (SoRALinear, LowRankLinear)):
            raise ValueError(f"layer {name!r} already carries a SoRA adapter")
        dims = layer_dims(base)
        if dims is None:
            raise ValueError(f"layer {name!r} of the adapter is a {type(base).__name__}, not a linear layer")
        d_in, d_out = dims
        if (d_in, d_out) != (info["in_features"], info["out_features"]):
            raise ValueError(f"layer {name!r}: adapter was saved for ({info['in_features']} -> "
                             f"{info['out_features']}), model has ({d_in} -> {d_out})")

    for p in base_model.parameters():
        p.requires_grad_(False)
    for name, info in layers.items():
        base = modules[name]
        if info["kind"] == "sora":
            mod = SoRALinear(base, info["r_max"], info["scaling"] * info["r_max"], config.dropout, config.gate_init)
            with torch.no_grad():
                for key in ("sora_A", "sora_B", "sora_gate"):
                    dst, src = getattr(mod, key), tensors[f"{name}.{key}"]
                    if src.shape != dst.shape:
                        raise ValueError(f"{name}.{key}: saved shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
                    dst.copy_(src.to(dtype=dst.dtype, device=dst.device))
                    dst.requires_grad_(is_trainable)
            mod.scaling = float(info["scaling"])
        elif info["kind"] == "pruned":
            dtype, device = adapter_dtype(base.weight), base.weight.device
            a = tensors[f"{name}.lora_A"].to(dtype=dtype, device=device)
            b = tensors[f"{name}.lora_B"].to(dtype=dtype, device=device)
            mod = LowRankLinear(base, a, b, info["scaling"], info["r_max"], config.dropout,
                                requires_grad=is_trainable)
        else:
            raise ValueError(f"layer {name!r}: unknown kind {info['kind']!r}")
        mod.train(base.training)
        set_submodule(base_model, name, mod)
    base_model.sora_config = config
    return base_model
