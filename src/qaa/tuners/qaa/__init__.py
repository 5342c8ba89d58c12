"""The QAA tuner: :mod:`.config` (``QAAConfig``), :mod:`.layer` (``QAALayer``), :mod:`.model` (attach, detach,
adapters, save/load, optimizer groups), :mod:`.calibrate` (the input transform's statistics). docs/design.md
describes what a QAA layer computes."""
from .calibrate import SCALE_EPS, calibrate_input_transform
from .config import INPUT_TRANSFORMS, PEFT_TYPE, QAAConfig
from .distributed import unwrap_model
from .layer import InputStandardizer, QAALayer
from .model import (MergeError, attach, detach, detach_adapter, disable_adapter, load_adapter, load_adapter_weights,
                    load_adapters, merge, param_groups, qaa_layers, reset_adapter_parameters, save_adapter, set_adapter)

__all__ = ["PEFT_TYPE", "INPUT_TRANSFORMS", "QAAConfig", "QAALayer", "InputStandardizer", "MergeError", "attach",
           "detach", "detach_adapter", "disable_adapter", "load_adapter", "load_adapter_weights", "load_adapters", "merge",
           "param_groups", "qaa_layers", "save_adapter", "set_adapter", "reset_adapter_parameters",
           "calibrate_input_transform", "SCALE_EPS",
           "unwrap_model"]
