"""Optax optimisers and schedules built from a config's ``train`` section."""

from __future__ import annotations

import optax


def make_schedule(train_cfg) -> optax.Schedule:
    if train_cfg.schedule == "constant":
        return optax.linear_schedule(0.0, train_cfg.lr, train_cfg.warmup_steps) if train_cfg.warmup_steps > 1 \
            else optax.constant_schedule(train_cfg.lr)
    if train_cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=train_cfg.lr, warmup_steps=train_cfg.warmup_steps,
            decay_steps=max(train_cfg.steps, train_cfg.warmup_steps + 1), end_value=train_cfg.lr * 0.01)
    raise ValueError(f"unknown schedule {train_cfg.schedule!r}")


def make_optimizer(train_cfg, *, b1: float = 0.9, b2: float = 0.999, clip: float | None = 1.0,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam(W) with warm-up + cosine decay and optional global-norm clipping."""
    parts = [optax.clip_by_global_norm(clip)] if clip else []
    parts.append(optax.adamw(make_schedule(train_cfg), b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*parts)
