"""Memory measurement for training runs.

CUDA: ``torch.cuda.max_memory_allocated`` (exact, reset per phase). CPU: a sampling thread reads the process's
resident set size (``psutil``, every 5 ms) and reports the peak increase over the value at the start of the
phase; ``activation_bytes`` counts the bytes autograd saves for the backward pass (deterministic, exact);
``memory_account`` gives the deterministic bytes of one training step per component (trainable parameters,
gradients, optimizer state, activations, frozen parameters) and, on CUDA, the step's peak allocation.
"""
from __future__ import annotations

import contextlib
import threading
import time

import torch


class MemoryMonitor:
    """Context manager measuring the peak memory increase of the enclosed block, in MiB (``peak_delta_mb``).

    Uses CUDA's allocator statistics when CUDA is initialised, else sampled RSS.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_delta_mb = 0.0
        self._stop = threading.Event()
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()

    def __enter__(self):
        if self._cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        import psutil

        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._peak = self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss
            if rss > self._peak:
                self._peak = rss
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self._cuda:
            torch.cuda.synchronize()
            self.peak_delta_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
            return False
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_delta_mb = (self._peak - self._base) / 2**20
        return False


class _Counter:
    bytes = 0


@contextlib.contextmanager
def activation_bytes(exclude=()):
    """Count the bytes of tensors autograd saves for backward inside the block (each storage once).

    Storages of the tensors in ``exclude`` (e.g. the model's parameters, which are saved by reference) are not
    counted, so the figure is the activation memory proper.
    """
    counter = _Counter()
    seen = {(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in exclude}

    def pack(t):
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            key = None
        if key is not None and key not in seen:
            seen.add(key)
            counter.bytes += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (s.device.type, s.device.index, s.data_ptr(), s.nbytes())


def _unique_storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages, e.g. tied weights, counted once)."""
    seen = {}
    for t in tensors:
        if t is None:
            continue
        key = _storage_key(t)
        seen[key] = key[3]
    return sum(seen.values())


def _default_loss(model, batch):
    if isinstance(batch, dict):
        return model(**batch).loss
    raise TypeError("batch must be a dict of model inputs with labels (e.g. collate()'s output) when no loss_fn is "
                    f"given, got {type(batch).__name__}")


#: Keys of :func:`memory_account`'s components, in bytes; ``total_bytes`` is their sum.
ACCOUNT_COMPONENTS = ("trainable_param_bytes", "gradient_bytes", "optimizer_state_bytes", "activation_bytes",
                      "frozen_param_bytes", "buffer_bytes")


def memory_account(model: torch.nn.Module, batch, optimizer="adamw", loss_fn=None) -> dict:
    """Deterministic memory account of one training step of ``model`` on ``batch``, in bytes per component.

    The step is real: ``model`` is put in training mode, ``loss_fn(model, batch)`` (default: ``model(**batch)
    .loss``, ``batch`` a dict of tensors such as :func:`.train.collate` returns) runs forward inside
    :func:`activation_bytes`, then backward, then one optimizer step at learning rate 0 and without weight decay
    (the state is allocated as in training, the weights do not move). Afterwards the gradients and the optimizer
    are released and the module's train/eval mode is restored, so the model is as it was.

    Args:
        model: the module to account for; its parameters with ``requires_grad`` are the trainable ones. Tensors of
            ``batch`` are moved to the device of its first parameter.
        batch: the step's inputs (dict of tensors for the default loss, anything ``loss_fn`` accepts otherwise).
        optimizer: ``"adamw"`` (``torch.optim.AdamW``), ``"sgd"`` (plain SGD, no momentum: no state), a callable
            ``params -> torch.optim.Optimizer``, or ``None`` (no optimizer step: ``optimizer_state_bytes`` is None
            and ``total_bytes`` leaves it out; e.g. when the state would not fit in memory).
        loss_fn: ``(model, batch) -> scalar tensor``; default the model's own ``.loss``.

    Returns:
        dict of ints (bytes), every storage counted once (tied weights once):
        ``trainable_param_bytes`` (parameters with ``requires_grad``), ``gradient_bytes`` (their ``.grad`` after
        backward), ``optimizer_state_bytes`` (every tensor in the optimizer's state after the step, e.g. AdamW's
        ``exp_avg``, ``exp_avg_sq`` and its ``step`` counter as torch stores it), ``activation_bytes`` (tensors
        autograd saved for backward, parameters excluded, see :func:`activation_bytes`), ``frozen_param_bytes``
        (parameters without ``requires_grad``), ``buffer_bytes`` (the module's buffers) and ``total_bytes`` (the
        sum of these six). Also ``trainable_params`` and ``frozen_params`` (element counts), ``optimizer``
        (its class name or None), ``device``, and ``cuda_max_allocated_bytes``: on CUDA,
        ``torch.cuda.max_memory_allocated`` during the step (everything allocated on the device, including the
        model, temporaries and allocator rounding), on CPU None (no exact peak exists there; resident-memory
        figures are indicative only, see :class:`MemoryMonitor`).

    Raises:
        ValueError: the model has no trainable parameters, or an unknown optimizer name.
        TypeError: ``batch`` is not a dict and no ``loss_fn`` is given.
    """
    all_params = list(model.parameters())
    trainable = [p for p in all_params if p.requires_grad]
    frozen = [p for p in all_params if not p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    if optimizer == "adamw":
        make_opt = lambda ps: torch.optim.AdamW(ps, lr=0.0, weight_decay=0.0)  # noqa: E731
    elif optimizer == "sgd":
        make_opt = lambda ps: torch.optim.SGD(ps, lr=0.0)  # noqa: E731
    elif optimizer is None or callable(optimizer):
        make_opt = optimizer
    else:
        raise ValueError(f"optimizer must be 'adamw', 'sgd', a callable or None, got {optimizer!r}")
    device = trainable[0].device
    if isinstance(batch, dict):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    elif isinstance(batch, torch.Tensor):
        batch = batch.to(device)
    loss_fn = loss_fn or _default_loss
    for p in trainable:
        p.grad = None
    was_training = model.training
    model.train()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    opt, opt_name = None, None
    try:
        with activation_bytes(exclude=all_params) as saved:
            loss = loss_fn(model, batch)
        loss.backward()
        del loss
        grad_bytes = _unique_storage_bytes(p.grad for p in trainable)
        state_bytes = None
        if make_opt is not None:
            opt = make_opt(trainable)
            opt_name = type(opt).__name__
            opt.step()
            state_bytes = _unique_storage_bytes(v for st in opt.state.values() for v in st.values()
                                                if isinstance(v, torch.Tensor))
        peak = None
        if cuda:
            torch.cuda.synchronize(device)
            peak = int(torch.cuda.max_memory_allocated(device))
    finally:
        for p in trainable:
            p.grad = None
        if opt is not None:
            opt.state.clear()
        del opt
        model.train(was_training)
    out = {
        "trainable_param_bytes": _unique_storage_bytes(trainable),
        "gradient_bytes": grad_bytes,
        "optimizer_state_bytes": state_bytes,
        "activation_bytes": int(saved.bytes),
        "frozen_param_bytes": _unique_storage_bytes(frozen),
        "buffer_bytes": _unique_storage_bytes(model.buffers()),
    }
    out["total_bytes"] = sum(v for v in out.values() if v is not None)
    out.update(trainable_params=sum(p.numel() for p in trainable), frozen_params=sum(p.numel() for p in frozen),
               optimizer=opt_name, device=str(device), cuda_max_allocated_bytes=peak)
    return out
