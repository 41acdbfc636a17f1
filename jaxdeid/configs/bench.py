"""Benchmark settings."""

import ml_collections


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.batch_sizes = {"smoke": (1, 4), "small": (1, 8, 32), "paper": (1, 8, 32)}[preset]
    c.rounds = {"smoke": 2, "small": 5, "paper": 10}[preset]
    return c
