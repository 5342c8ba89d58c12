"""The methods QAA is compared against that peft or plain torch provide: LoRA and prefix tuning (peft), and
full fine-tuning (every parameter trainable, the memory reference); and the control tuners of QAA (a trainable
bias, random features). SoRA is its own tuner (:mod:`..sora`)."""
from .controls import (CONTROL_KINDS, BiasControlLinear, RandomFeatureLinear, attach_control, control_modules,
                       load_control, save_control)
from .full import load_full, prepare_full_finetune, save_full
from .peft_methods import (attach_lora, attach_prefix, load_peft_adapter, prefix_kv_from_tokens, prefix_kv_layout,
                           save_peft_adapter)

__all__ = ["attach_lora", "attach_prefix", "prefix_kv_layout", "prefix_kv_from_tokens", "save_peft_adapter", "load_peft_adapter",
           "prepare_full_finetune", "save_full", "load_full", "CONTROL_KINDS", "BiasControlLinear",
           "RandomFeatureLinear", "attach_control", "control_modules", "save_control", "load_control"]
