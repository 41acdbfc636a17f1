"""One training-loop pattern for every network (see `loop.run`)."""

from .loop import Task, TrainingReport, restore_latest, run
from .optim import make_optimizer

__all__ = ["Task", "TrainingReport", "run", "restore_latest", "make_optimizer"]
