"""The training fields every network shares (one training-loop pattern)."""

import ml_collections


def train_defaults(preset: str, *, steps: dict, lr: float, batch_size: dict) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.steps = steps[preset]             # optimiser steps
    c.batch_size = batch_size[preset]
    c.lr = lr                           # peak learning rate
    c.warmup_steps = max(1, steps[preset] // 50)
    c.schedule = "cosine"               # cosine | constant
    c.log_every = max(1, steps[preset] // 50)
    c.ckpt_every = max(1, steps[preset] // 5)
    c.eval_every = max(1, steps[preset] // 5)
    c.keep_checkpoints = 2
    c.max_seconds = 0.0                 # wall-clock budget of one run (0 = none): save and stop when spent
    return c
