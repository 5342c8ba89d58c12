"""Calibration of the ``"standardize"`` input transform (``QAAConfig.input_transform``) from data.

The transform ``x' = (x - mean) / scale`` exists because the hidden states of models such as SmolLM2 carry one
or two "massive" coordinates holding most of ``||x||^2``: the normalised embedded state ``x / ||x||`` is then
almost the same for every token and the circuit barely sees the token. Standardising each input coordinate
with statistics of the layer's own inputs removes that common part. docs/design.md has the details.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Dict, Optional

import torch
from torch import nn

from .layer import QAALayer

__all__ = ["SCALE_EPS", "calibrate_input_transform"]

#: Floor of ``scale``, relative to the largest per-coordinate standard deviation of the layer: a coordinate
#: that is (nearly) constant over the calibration tokens gets ``scale = SCALE_EPS * max(std)`` instead of 0,
#: so the transform never divides by zero. A layer whose inputs are all constant gets ``scale = 1``.
SCALE_EPS = 1e-6


def _batches_as_kwargs(batch) -> dict:
    if isinstance(batch, torch.Tensor):
        return {"input_ids": batch}
    if isinstance(batch, Mapping):
        return dict(batch)
    raise TypeError(f"each batch must be a dict of model inputs (or an input_ids tensor), got {type(batch).__name__}")


def _to_device(kwargs: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}


def calibrate_input_transform(model: nn.Module, batches: Iterable, adapter_name: Optional[str] = None,
                              max_batches: Optional[int] = None) -> Dict[str, dict]:
    """Set the ``"standardize"`` input transform of every QAA layer holding ``adapter_name`` from data.

    Runs ``model(**batch)`` under ``torch.no_grad`` in eval mode (the training flags of all modules are
    restored afterwards) for each batch of ``batches`` (at most ``max_batches``) and collects, per layer and
    per input coordinate, the count, sum and sum of squares of the layer's input rows in float64. A batch with
    an ``attention_mask`` (shape ``[batch, seq]``, matching the leading dimensions of the layer input) counts
    only positions where the mask is non-zero, so padding is excluded. If ``torch.distributed`` is initialised
    the statistics are all-reduced (SUM) across ranks, so every rank sets identical buffers (every rank must
    call this, with its own share of the data). Then per layer::

        mean  = sum / count
        std   = sqrt(max(sumsq / count - mean^2, 0))        (population standard deviation)
        scale = max(std, SCALE_EPS * max(std))              (scale = 1 where every std is 0)

    are written into the layer's buffers (``qaa_input[adapter_name].mean`` / ``.scale``, adapter dtype), which
    are marked calibrated. The inputs seen are those of the model as it is, so calibrate before training,
    while ``P = 0`` and the branch adds nothing: then they are the base model's inputs to each layer.

    Args:
        model: a model with QAA layers (from :func:`qaa.attach`).
        batches: iterable of dicts of model inputs (``input_ids``, optional ``attention_mask``, ...), or of
            ``input_ids`` tensors; tensors are moved to the device of the model's first parameter.
        adapter_name: the adapter to calibrate; default the model's active adapter.
        max_batches: use at most this many batches (``None``: all).

    Returns:
        ``{layer_name: {"count": int, "mean_norm": float, "std_min": float, "std_median": float,
        "std_max": float}}`` (float64 statistics: ``mean_norm = ||mean||``).

    Raises:
        KeyError: ``adapter_name`` is not attached.
        ValueError: ``adapter_name`` left out while several adapters are active; the adapter has no input transform, ``max_batches < 1``, an attention mask that does not
            match a layer input's leading shape, or no token was counted (on all ranks together).
        TypeError: a batch that is neither a dict nor a tensor.
    """
    configs = getattr(model, "qaa_configs", {})
    if adapter_name is None:
        adapter_name = getattr(model, "qaa_active_adapter", None)
        if isinstance(adapter_name, list):
            raise ValueError(f"several adapters are active ({adapter_name}): pass adapter_name= to say which to "
                             "calibrate")
    if adapter_name not in configs:
        raise KeyError(f"no adapter named {adapter_name!r}; attached: {sorted(configs)}")
    if configs[adapter_name].input_transform != "standardize":
        raise ValueError(f"adapter {adapter_name!r} has input_transform={configs[adapter_name].input_transform!r}; "
                         "attach it with QAAConfig(input_transform='standardize') to calibrate")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches must be None or a positive int, got {max_batches!r}")
    layers = sorted((name, layer) for name, layer in model.named_modules()
                    if isinstance(layer, QAALayer) and adapter_name in layer.qaa_input)
    if not layers:
        raise ValueError(f"no QAA layer holds an input transform for adapter {adapter_name!r}")

    # Per layer: [3, d_in] float64 = count, sum, sum of squares (count repeated per coordinate, so one
    # all-reduce carries everything).
    stats = {name: torch.zeros(3, layer.d_in, dtype=torch.float64, device=layer.qaa_input[adapter_name].mean.device)
             for name, layer in layers}
    current_mask: list = [None]

    def hook_for(name: str):
        def hook(_module, args, _kwargs=None):
            x = args[0].detach()
            rows = x.reshape(-1, x.shape[-1])
            mask = current_mask[0]
            if mask is not None:
                if tuple(mask.shape) != tuple(x.shape[:-1]):
                    raise ValueError(f"attention_mask of shape {tuple(mask.shape)} does not match the input of "
                                     f"{name} (leading shape {tuple(x.shape[:-1])})")
                rows = rows[mask.reshape(-1).to(rows.device) != 0]
            rows = rows.to(torch.float64)
            s = stats[name]
            s[0] += rows.shape[0]
            s[1] += rows.sum(0).to(s.device)
            s[2] += (rows * rows).sum(0).to(s.device)
        return hook

    training = {m: m.training for m in model.modules()}
    device = next(model.parameters()).device
    with contextlib.ExitStack() as stack:
        for name, layer in layers:
            stack.callback(layer.register_forward_pre_hook(hook_for(name)).remove)
        model.eval()
        try:
            with torch.no_grad():
                for i, batch in enumerate(batches):
                    if max_batches is not None and i >= max_batches:
                        break
                    kwargs = _to_device(_batches_as_kwargs(batch), device)
                    current_mask[0] = kwargs.get("attention_mask")
                    model(**kwargs)
        finally:
            for m, flag in training.items():
                m.train(flag)

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for name, _ in layers:  # sorted names: the same order on every rank
            dist.all_reduce(stats[name], op=dist.ReduceOp.SUM)

    summaries = {}
    for name, layer in layers:
        count, total, squares = stats[name]
        n = float(count[0])
        if n == 0:
            raise ValueError(f"no token reached {name}: the batches are empty or fully masked")
        mean = total / n
        std = (squares / n - mean * mean).clamp_min(0.0).sqrt()
        top = float(std.max())
        scale = std.clamp_min(SCALE_EPS * top) if top > 0 else torch.ones_like(std)
        layer.qaa_input[adapter_name].set_statistics(mean, scale)
        summaries[name] = {"count": int(n), "mean_norm": float(mean.norm()), "std_min": float(std.min()),
                           "std_median": float(std.median()), "std_max": top}
    return summaries
