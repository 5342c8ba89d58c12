"""Memory measurement for training runs.

CUDA: ``torch.cuda.max_memory_allocated`` (exact, reset per phase). CPU: a sampling thread reads the process's
resident set size (``psutil``, every 5 ms) and reports the peak increase over the value at the start of the
phase; ``activation_bytes`` counts the bytes autograd saves for the backward pass (deterministic, exact).
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
