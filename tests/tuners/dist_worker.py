"""One rank of the distributed tests (tests/tuners/test_distributed.py), started by ``torch.distributed.run``.

    python -m torch.distributed.run --nproc-per-node 2 tests/tuners/dist_worker.py OUT SCENARIO [SCENARIO ...]

Each scenario (``<wrapper>-<precision>``, wrapper ``ddp`` | ``fsdp2`` | ``fsdp1``, precision ``fp32`` | ``bf16``)
trains QAA on a tiny Llama for ``STEPS`` AdamW steps, each rank on its half of a fixed batch, then saves the adapter
from the wrapped / sharded model (collective) into ``OUT/<scenario>/adapter``. Rank 0 writes
``OUT/<scenario>/result.pt``: the losses, the trained wrapped model's logits on a probe batch, and the logits of a
fresh wrapped model holding the saved adapter (DDP: loaded before wrapping; FSDP: loaded into the sharded model
with ``qaa.load_adapter_weights``). bf16 scenarios also train the same model under the same policy on a process
group of rank 0 alone (the world-size-1 reference) and save it into ``OUT/<scenario>/ref1``, and on rank 0's half
of each batch alone (no synchronisation: what a rank whose gradients are not all-reduced learns) into
``OUT/<scenario>/half``.

bf16 policies: DDP, ``torch.autocast(bfloat16)`` (parameters float32); FSDP2,
``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)``; FSDP1,
``MixedPrecision(param_dtype=bfloat16, reduce_dtype=float32, buffer_dtype=bfloat16)``.
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import tiny_llama  # noqa: E402

import qaa  # noqa: E402

STEPS = 3
LR = 1e-2
BATCH = 4            # sequences per optimizer step (all ranks together)
LENGTH = 12          # tokens per sequence (no padding: every rank's mean loss weighs its tokens equally)
CONFIG = dict(target_modules=["q_proj", "v_proj"], n_layers=2, seed=0)


def batches():
    """The fixed training batches and the probe batch (same on every rank and in the test)."""
    g = torch.Generator().manual_seed(1234)
    train = [torch.randint(3, 200, (BATCH, LENGTH), generator=g) for _ in range(STEPS)]
    probe = torch.randint(3, 200, (2, LENGTH), generator=g)
    return train, probe


def fresh_model(seed: int = 0):
    model, _ = tiny_llama()
    qaa.attach(model, qaa.QAAConfig(**{**CONFIG, "seed": seed}))
    return model


def wrap(model, wrapper: str, precision: str, group=None):
    """``(wrapped model, autocast context factory)`` for the scenario's wrapper and precision policy."""
    bf16 = precision == "bf16"
    if wrapper == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model, process_group=group)
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        return wrapped, autocast
    if wrapper == "fsdp2":
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = DeviceMesh.from_group(group if group is not None else dist.group.WORLD, "cpu")
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
            else MixedPrecisionPolicy()
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model, contextlib.nullcontext
    if wrapper == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision

        mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                            buffer_dtype=torch.bfloat16) if bf16 else None
        wrapped = FullyShardedDataParallel(model, process_group=group, use_orig_params=True,
                                           device_id=torch.device("cpu"), mixed_precision=mp)
        return wrapped, contextlib.nullcontext
    raise ValueError(wrapper)


def train(wrapper: str, precision: str, rank: int, world: int, group=None):
    """Train a fresh model for STEPS steps, rank ``rank`` of ``world`` on rows ``rank::world`` of each batch."""
    model = fresh_model()
    wrapped, autocast = wrap(model, wrapper, precision, group)
    opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=LR)
    train_batches, probe = batches()
    losses = []
    wrapped.train()
    for ids in train_batches:
        mine = ids[rank::world]
        with autocast():
            loss = wrapped(input_ids=mine, labels=mine).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    wrapped.eval()
    with torch.no_grad(), autocast():
        logits = wrapped(input_ids=probe).logits.float()
    return wrapped, losses, logits, autocast


def state_dict_round_trip(wrapped, wrapper: str, precision: str, probe, autocast) -> dict:
    """torch's distributed checkpoint API on the sharded model: the full state dict (gathered on every rank) and
    the sharded one (each rank its shards), each set into a fresh sharded model of another initialisation;
    ``{"full" | "sharded": its logits on the probe batch}``. (A full state dict gathered on rank 0 and set with
    ``broadcast_from_rank0`` is not supported yet: docs/design.md §7.)"""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         set_model_state_dict)

    full = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True))
    sharded = get_model_state_dict(wrapped)
    out = {}
    for kind, sd, opts in (("full", full, StateDictOptions(full_state_dict=True)),
                           ("sharded", sharded, StateDictOptions())):
        fresh, _ = wrap(fresh_model(seed=1), wrapper, precision)
        set_model_state_dict(fresh, sd, options=opts)
        fresh.eval()
        with torch.no_grad(), autocast():
            out[kind] = fresh(input_ids=probe).logits.float()
    return out


def main() -> None:
    out, scenarios = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    solo = dist.new_group([0])  # rank 0 alone: the world-size-1 reference under the same policy
    _, probe = batches()
    for scenario in scenarios:
        wrapper, precision = scenario.split("-")
        folder = os.path.join(out, scenario)
        wrapped, losses, logits, autocast = train(wrapper, precision, rank, world)
        qaa.save_adapter(wrapped, os.path.join(folder, "adapter"))  # collective, rank 0 writes
        # A fresh model holding the saved adapter, wrapped the same way.
        if wrapper == "ddp":
            plain, _ = tiny_llama()
            qaa.load_adapter(plain, os.path.join(folder, "adapter"), is_trainable=True)
            loaded, _ = wrap(plain, wrapper, precision)
        else:
            loaded, _ = wrap(fresh_model(seed=1), wrapper, precision)
            qaa.load_adapter_weights(loaded, os.path.join(folder, "adapter"))
        loaded.eval()
        with torch.no_grad(), autocast():
            loaded_logits = loaded(input_ids=probe).logits.float()
        dtypes = sorted({str(p.dtype) for n, p in wrapped.named_parameters() if "qaa_" in n})
        state_dict_logits = state_dict_round_trip(wrapped, wrapper, precision, probe, autocast) \
            if wrapper == "fsdp2" else {}
        if precision == "bf16" and rank == 0:
            ref, _, _, _ = train(wrapper, precision, 0, 1, group=solo)
            qaa.save_adapter(ref, os.path.join(folder, "ref1"))
            # what an unsynchronised rank would learn: rank 0's half of every batch, no gradient all-reduce (the
            # failure the bf16 agreement bound must detect)
            half, _, _, _ = train(wrapper, precision, 0, 2, group=solo)
            qaa.save_adapter(half, os.path.join(folder, "half"))
        dist.barrier()
        if rank == 0:
            torch.save({"losses": losses, "logits": logits, "loaded_logits": loaded_logits,
                        "adapter_dtypes": dtypes, "state_dict_logits": state_dict_logits},
                       os.path.join(folder, "result.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
