"""SoRA (Ding et al., EMNLP 2023): LoRA with a per-rank gate, proximal sparsification and pruning.

Laid out as peft lays out its tuners: :mod:`.config`, :mod:`.layer`, :mod:`.model` (attach, training hooks,
pruning, save/load).
"""
from .config import PEFT_TYPE, SoRAConfig
from .layer import LowRankLinear, SoRALinear
from .model import (attach_sora, l1_penalty, load_sora, proximal_step, prune_sora, save_sora, sora_gates,
                    sora_modules, sora_param_groups, sora_rank_summary)

__all__ = ["PEFT_TYPE", "SoRAConfig", "SoRALinear", "LowRankLinear", "attach_sora", "sora_modules", "sora_gates",
           "sora_param_groups", "proximal_step", "l1_penalty", "prune_sora", "sora_rank_summary", "save_sora",
           "load_sora"]
