"""The QAA tuner: :mod:`.config` (``QAAConfig``), :mod:`.layer` (``QAALayer``), :mod:`.model` (attach, detach,
switch and disable adapters), :mod:`.persistence` (save / load), :mod:`.calibrate` (the input transform's
statistics), :mod:`.distributed` (wrappers and sharding), :mod:`.hf_compat` and :mod:`.hub` (what Hugging Face
tools see), :mod:`.trainer` / :mod:`.sft` (adapter-only checkpoints). docs/design.md describes what a QAA layer
computes."""
from .calibrate import SCALE_EPS, calibrate_input_transform
from .config import INPUT_TRANSFORMS, PEFT_TYPE, QAAConfig
from .distributed import unwrap_model
from .layer import InputStandardizer, QAALayer
from .model import (MergeError, attach, detach, detach_adapter, disable_adapter, merge, qaa_layers,
                    reset_adapter_parameters, set_adapter)
from .persistence import load_adapter, load_adapter_weights, load_adapters, save_adapter

__all__ = ["PEFT_TYPE", "INPUT_TRANSFORMS", "QAAConfig", "QAALayer", "InputStandardizer", "MergeError", "attach",
           "detach", "detach_adapter", "disable_adapter", "load_adapter", "load_adapter_weights", "load_adapters", "merge",
           "qaa_layers", "save_adapter", "set_adapter", "reset_adapter_parameters",
           "calibrate_input_transform", "SCALE_EPS",
           "unwrap_model"]
