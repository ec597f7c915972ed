"""One training loop for every model (`loop.train_model`) and one CLI (`python -m pipelines train KIND`)."""

from .loop import TrainConfig, TrainResult, TrainTask, train_model

__all__ = ["TrainConfig", "TrainResult", "TrainTask", "train_model"]
