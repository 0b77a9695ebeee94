"""The ``train`` stage's public surface (implemented in ``humpback.training``).

Other stages import prompt builders from here (``backward_messages`` for augmenting with the backward
model, ``forward_messages`` for asking a forward model) so training and inference prompts stay identical.
"""

from .training import (  # noqa: F401
    SEED_TAG,
    WEB_TAG,
    LoraSettings,
    TrainConfig,
    TrainingError,
    TrainResult,
    __all__,
    backward_messages,
    forward_messages,
    is_finished,
    system_tag,
    train_backward,
    train_forward,
)
