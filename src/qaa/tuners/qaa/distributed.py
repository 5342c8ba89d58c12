"""QAA under wrappers and sharding: find the attached model inside DDP / FSDP / DeepSpeed / peft / torch.compile
wrappers, name its layers as the plain model does, and gather (or scatter back) sharded adapter tensors.

What each wrapper does to an adapter tensor, and how it is made whole here:

- ``DistributedDataParallel``, peft, ``torch.compile``: nothing (every rank holds the full tensor); only the
  module names gain a prefix (``module.``, ``base_model.model.``, ``_orig_mod.``), which :func:`unwrap_model`
  removes by descending to the model ``attach`` was called on.
- FSDP2 (``fully_shard``): every parameter is a ``DTensor`` sharded on dim 0; ``full_tensor()`` all-gathers it.
- FSDP1 (``FullyShardedDataParallel``): parameters live in flat shards (with ``use_orig_params=True`` a rank holds
  a slice of each, often empty); ``FullyShardedDataParallel.summon_full_params`` restores them; nested wrappers
  add ``_fsdp_wrapped_module.`` to the names.
- DeepSpeed ZeRO-3: parameters are partitioned (local shape ``(0,)``); ``deepspeed.zero.GatheredParameters``
  restores them.

Gathering is collective: every rank must make the same calls in the same order.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["WRAPPER_NAME_PARTS", "unwrap_model", "clean_module_name", "is_distributed_wrapper", "is_sharded",
           "full_parameters", "full_tensor", "copy_full_into", "rank_and_world", "process_group", "collective"]

#: Name components wrappers insert inside a model (FSDP1's nested wrappers, activation checkpointing,
#: torch.compile); the plain model's names are the qualified names without them.
WRAPPER_NAME_PARTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def _fsdp1_class():
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return None
    return FullyShardedDataParallel


def _dtensor_class():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return None
    return DTensor


def _is_ddp(module: nn.Module) -> bool:
    return isinstance(module, nn.parallel.DistributedDataParallel)


def _is_deepspeed_engine(module: nn.Module) -> bool:
    # DeepSpeed is optional: recognised by its class name, never imported here.
    return any(c.__name__ == "DeepSpeedEngine" for c in type(module).__mro__)


def _is_peft_model(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(module, PeftModel)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model ``attach`` was called on, found inside any nesting of ``DistributedDataParallel``,
    ``FullyShardedDataParallel`` (FSDP1), a DeepSpeed engine, a peft ``PeftModel`` and ``torch.compile``'s
    wrapper (``_orig_mod``); ``model`` itself when it holds the adapters or is none of these wrappers.
    (FSDP2's ``fully_shard`` changes the module's class in place and needs no unwrapping.)"""
    for _ in range(32):  # wrappers nest a few levels at most; the bound only guards against cycles
        if "qaa_configs" in model.__dict__:
            return model
        mods = model.__dict__.get("_modules", {})
        inner: Optional[nn.Module] = None
        if isinstance(mods.get("_orig_mod"), nn.Module):
            inner = mods["_orig_mod"]
        elif _is_ddp(model) or _is_deepspeed_engine(model):
            inner = mods.get("module")
        elif _fsdp1_class() is not None and isinstance(model, _fsdp1_class()):
            inner = mods.get("_fsdp_wrapped_module")
        elif _is_peft_model(model):
            tuner = mods.get("base_model")
            inner = tuner.__dict__.get("_modules", {}).get("model") if isinstance(tuner, nn.Module) else None
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def clean_module_name(name: str) -> str:
    """``name`` without the components wrappers insert (:data:`WRAPPER_NAME_PARTS`): the plain model's name."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_NAME_PARTS)


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is sharded: an FSDP2 ``DTensor``, an FSDP1-managed module, or a
    DeepSpeed ZeRO-3 parameter."""
    fsdp1, dtensor = _fsdp1_class(), _dtensor_class()
    if fsdp1 is not None and any(isinstance(m, fsdp1) for m in model.modules()):
        return True
    for p in model.parameters():
        if (dtensor is not None and isinstance(p, dtensor)) or hasattr(p, "ds_id"):
            return True
    return False


def is_distributed_wrapper(model: nn.Module) -> bool:
    """Whether ``model`` is (or holds) a data-parallel wrapper or sharded parameters: DDP, FSDP1, FSDP2, a
    DeepSpeed engine. Such a model registered its parameters when it was built: adapters cannot be added to it."""
    for m in model.modules():
        if _is_ddp(m) or _is_deepspeed_engine(m):
            return True
    return is_sharded(model)


def rank_and_world() -> Tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when torch.distributed is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def process_group(model: nn.Module):
    """``(group, size)``: the process group the wrapper or sharded parameters of ``model`` use (DDP's and FSDP1's
    ``process_group``, FSDP2's device mesh), the default group otherwise; ``(None, 1)`` without
    torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None, 1
    group = None
    fsdp1, dtensor = _fsdp1_class(), _dtensor_class()
    for m in model.modules():
        if _is_ddp(m) or (fsdp1 is not None and isinstance(m, fsdp1)):
            group = m.process_group
            break
    if group is None and dtensor is not None:
        for p in model.parameters():
            if isinstance(p, dtensor):
                group = p.device_mesh.get_group()
                break
    group = group if group is not None else dist.group.WORLD
    return group, dist.get_world_size(group)


def collective(model: nn.Module) -> bool:
    """Whether saving / loading ``model``'s adapters is a collective call: a distributed wrapper (or sharded
    parameters) over a process group of more than one rank."""
    return is_distributed_wrapper(model) and process_group(model)[1] > 1


@contextlib.contextmanager
def full_parameters(model: nn.Module, params=(), writeback: bool = False):
    """Context in which the FSDP1- and ZeRO-3-sharded parameters of ``model`` are whole on every rank
    (collective: every rank enters it). ``params``: the parameters a ZeRO-3 gather should cover. With
    ``writeback`` the values present on leaving are written back to the shards (FSDP1: every rank's copy is
    written back, so every rank must hold the same values; ZeRO-3: rank 0's). FSDP2 ``DTensor`` parameters are
    gathered one by one with :func:`full_tensor` instead. Without sharding this does nothing."""
    with contextlib.ExitStack() as stack:
        fsdp1 = _fsdp1_class()
        if fsdp1 is not None and any(isinstance(m, fsdp1) for m in model.modules()):
            for root in fsdp1.fsdp_modules(model, root_only=True):
                stack.enter_context(fsdp1.summon_full_params(root, writeback=writeback, recurse=True))
        zero3 = [p for p in params if hasattr(p, "ds_id")]
        if zero3:
            import deepspeed  # present whenever a parameter carries ZeRO-3 attributes

            stack.enter_context(deepspeed.zero.GatheredParameters(zero3, modifier_rank=0 if writeback else None))
        yield


def deepspeed_masters(model: nn.Module, params) -> dict:
    """``{id(param): float32 master copy}`` for the parameters among ``params`` that a DeepSpeed engine in
    ``model``'s wrapper chain holds in 16 bits (bf16 / fp16 training keeps the model's copy rounded and the
    float32 values in the optimizer). Empty when there is no DeepSpeed engine or nothing is 16-bit. Collective
    under ZeRO-3 (every rank must call it): ``deepspeed.utils.safe_get_full_fp32_param`` gathers the partitions.
    """
    if not any(_is_deepspeed_engine(m) for m in model.modules()):
        return {}
    params = [p for p in params if p.dtype in (torch.bfloat16, torch.float16)]
    if not params:
        return {}
    from deepspeed.utils import safe_get_full_fp32_param  # present: the engine is DeepSpeed's

    out = {}
    for p in params:
        master = safe_get_full_fp32_param(p)
        if master is not None:
            out[id(p)] = master.detach().to("cpu", torch.float32).reshape(p.ds_shape if hasattr(p, "ds_shape")
                                                                           else p.shape)
    return out


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole value of ``t`` as a new plain detached CPU tensor (a ``DTensor`` is all-gathered: collective).
    Always a copy: inside :func:`full_parameters` a parameter is a view of storage FSDP frees on leaving."""
    t = t.detach()
    dtensor = _dtensor_class()
    if dtensor is not None and isinstance(t, dtensor):
        t = t.full_tensor()
    return t.cpu().clone(memory_format=torch.contiguous_format)


@torch.no_grad()
def copy_full_into(target: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the whole value ``value`` (a plain tensor, the same on every rank) into ``target``: into the local
    shard when ``target`` is a ``DTensor``, else in place. Raises ValueError when the shapes differ."""
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f"cannot copy a tensor of shape {tuple(value.shape)} into one of shape {tuple(target.shape)}")
    dtensor = _dtensor_class()
    if dtensor is not None and isinstance(target, dtensor):
        from torch.distributed.tensor import distribute_tensor

        # Every rank holds the same value, so each takes its own shard of it without communication.
        local = distribute_tensor(value.to(device=target.to_local().device, dtype=target.dtype), target.device_mesh,
                                  target.placements, src_data_rank=None)
        target.to_local().copy_(local.to_local())
    else:
        target.copy_(value.to(device=target.device, dtype=target.dtype))
