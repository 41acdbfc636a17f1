"""Face cropping ("interception") network (component 2)."""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.width = {"smoke": 8, "small": 24, "paper": 64}[preset]     # base conv width of the detector
    c.iou_threshold = 0.5                                        # detection counts when IoU >= this (SPEC §4.4)
    c.score_threshold = 0.5                                      # below this, "no face found"
    c.margin = 0.1                                               # crop margin around the box, as a fraction of its side
    c.train = train_defaults(preset, steps={"smoke": 20, "small": 3000, "paper": 30000},
                             lr=1e-3, batch_size={"smoke": 8, "small": 32, "paper": 64})
    return c
