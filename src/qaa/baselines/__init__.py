"""Baseline PEFT methods that QAA is compared against (DESIGN.md section 5).

- LoRA and prefix tuning from peft (:mod:`.peft_methods`); prefix tuning sized for grouped-query attention
  and fixed for generation on transformers 5.
- SoRA, implemented here (:mod:`.sora`): LoRA with a per-rank gate, proximal sparsification, pruning.
- Full fine-tuning (:mod:`.full`), the memory reference.
- Trainable-parameter counts in peft's report format (:mod:`.params`).
"""

from .full import load_full, prepare_full_finetune, save_full
from .params import format_trainable_parameters, print_trainable_parameters, trainable_parameter_summary
from .peft_methods import attach_lora, attach_prefix, load_peft_adapter, prefix_kv_layout, save_peft_adapter
from .sora import (
    LowRankLinear,
    SoRAConfig,
    SoRALinear,
    attach_sora,
    l1_penalty,
    load_sora,
    proximal_step,
    prune_sora,
    save_sora,
    sora_gates,
    sora_modules,
    sora_param_groups,
    sora_rank_summary,
)

__all__ = [
    "attach_lora",
    "attach_prefix",
    "prefix_kv_layout",
    "save_peft_adapter",
    "load_peft_adapter",
    "SoRAConfig",
    "SoRALinear",
    "LowRankLinear",
    "attach_sora",
    "sora_modules",
    "sora_gates",
    "sora_param_groups",
    "proximal_step",
    "l1_penalty",
    "prune_sora",
    "sora_rank_summary",
    "save_sora",
    "load_sora",
    "prepare_full_finetune",
    "save_full",
    "load_full",
    "trainable_parameter_summary",
    "format_trainable_parameters",
    "print_trainable_parameters",
]
