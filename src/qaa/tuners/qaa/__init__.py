"""The QAA tuner: :mod:`.config` (``QAAConfig``), :mod:`.layer` (``QAALayer``), :mod:`.model` (attach, detach,
adapters, save/load). docs/design.md describes what a QAA layer computes."""
from .config import PEFT_TYPE, QAAConfig
from .layer import QAALayer
from .model import (MergeError, attach, detach, detach_adapter, disable_adapter, load_adapter, merge, qaa_layers,
                    save_adapter, set_adapter)

__all__ = ["PEFT_TYPE", "QAAConfig", "QAALayer", "MergeError", "attach", "detach", "detach_adapter",
           "disable_adapter", "load_adapter", "merge", "qaa_layers", "save_adapter", "set_adapter"]
