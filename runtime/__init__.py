"""robustspec.runtime: train, attack and measure PyTorch models against compiled specs.

    from robustspec.runtime import load_dataset, PaperMLP, train, evaluate
    data = load_dataset("fashion-mnist", "train", limit=10000)
    model = PaperMLP(784)
    train(model, data.x, data.y, "constraint", prop=spec["sr"], epochs=2)
    print(evaluate(model, spec["sr"], test.x, test.y, eps=[0.05, 0.1]).table())
"""
from robustspec.dsl.errors import CheckpointError, InputError, RobustspecError

from .attack import AttackResult, attack
from .data import DataError, Dataset, load_dataset
from .metrics import EvalResult, evaluate
from .models import PaperMLP, SmallCNN, build_model
from .training import (REGIMES, TrainConfig, Trainer, TrainingError, load_checkpoint,
                       model_from_checkpoint, property_args, train)

__all__ = ["load_dataset", "Dataset", "DataError", "PaperMLP", "SmallCNN", "build_model", "train",
           "Trainer", "TrainConfig", "TrainingError", "REGIMES", "load_checkpoint",
           "model_from_checkpoint", "evaluate", "EvalResult", "attack", "AttackResult",
           "property_args", "RobustspecError", "InputError", "CheckpointError"]
