"""``QAASFTTrainer``: trl's ``SFTTrainer`` with :class:`~qaa.tuners.qaa.trainer.QAATrainer`'s adapter-only
checkpoints.

``SFTTrainer`` saves through ``Trainer.save_model`` / ``_save``, which write the whole model
(``model.safetensors``) into every checkpoint. ``QAATrainer`` replaces exactly those methods and the two that load
checkpoints, so putting it first in the bases (``QAATrainer`` before ``SFTTrainer``: Python's method resolution
order then takes its saving and loading, and everything else, data preparation and the loss included, from
``SFTTrainer``) gives SFT training whose checkpoints hold the QAA adapters, the tokenizer, the training arguments
and the optimizer / scheduler / RNG state only, and which resumes from them. Hand it the attached model
(``qaa.attach(model, config)``) and no ``peft_config``. Needs trl (``pip install "qaa[test]"`` brings it).
"""
from __future__ import annotations

try:
    from trl import SFTTrainer
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("qaa.QAASFTTrainer needs trl (pip install trl); qaa.QAATrainer needs only transformers") from e

from .trainer import QAATrainer

__all__ = ["QAASFTTrainer"]


class QAASFTTrainer(QAATrainer, SFTTrainer):
    """trl's ``SFTTrainer`` whose checkpoints and ``save_model`` hold the QAA adapters only (as
    :class:`~qaa.tuners.qaa.trainer.QAATrainer`'s do) and whose ``train(resume_from_checkpoint=...)`` restores
    them. Takes ``SFTTrainer``'s arguments; pass the attached model and no ``peft_config``.

    Raises: ValueError when the model holds no QAA adapter, or when given a ``peft_config`` (the model would
    be wrapped by peft and its QAA adapters would no longer be the only trainable parameters); the errors of
    ``SFTTrainer`` and ``QAATrainer``.
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("peft_config") is not None:
            raise ValueError("QAASFTTrainer trains the QAA adapters already attached to the model: pass the model "
                             "returned by qaa.attach and no peft_config")
        super().__init__(*args, **kwargs)
