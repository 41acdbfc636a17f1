"""One training-loop pattern for every network (see `loop.run`)."""

from .loop import Task, run, restore_latest
from .optim import make_optimizer

__all__ = ["Task", "run", "restore_latest", "make_optimizer"]
