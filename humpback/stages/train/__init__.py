"""Fine-tuning backward and forward models with trl (the ``humpback train`` stage); see docs/train.md."""

from .config import SEED_TAG, WEB_TAG, LoraSettings, TrainConfig
from .data import backward_messages, forward_messages, system_tag
from .sft import TrainingError, TrainResult, is_finished, train_backward, train_forward

__all__ = [
    "SEED_TAG", "WEB_TAG", "LoraSettings", "TrainConfig", "TrainResult", "TrainingError", "backward_messages",
    "forward_messages", "is_finished", "system_tag", "train_backward", "train_forward",
]
