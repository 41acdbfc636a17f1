"""Face cropping ("interception") network (component 2) and paste-back (component 8).

Train: ``jaxdeid train crop --preset small`` (CenterNet-style detector on SynthFaces
scenes; at small and paper half of each batch darkened and enhanced, `crop.enhanced_fraction`). Measure: ``python -m jaxdeid.reproduce.detection --preset small``.
"""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.width = {"smoke": 8, "small": 24, "paper": 64}[preset]     # base conv width of the detector
    c.blocks = {"smoke": (1, 1, 1, 1), "small": (2, 2, 2, 2), "paper": (2, 2, 2, 2)}[preset]  # residual blocks per stage
    c.head_width = 0                                             # hidden channels of each head (0: same as width)
    c.focal_alpha = 2.0                                          # CenterNet focal loss exponents (alpha, beta)
    c.focal_beta = 4.0
    c.size_weight = 0.1                                          # CenterNet's lambda_size (sizes in output cells)
    c.offset_weight = 1.0                                        # CenterNet's lambda_off
    c.flip = True                                                # random horizontal flips while training
    # Fraction of each training batch darkened (LLNet) and enhanced by the trained enhancement
    # network: the frames the private step gives the detector. Smoke keeps normal light only
    # (its detector trains before, and without, the enhancement network).
    c.enhanced_fraction = {"smoke": 0.0, "small": 0.5, "paper": 0.5}[preset]
    c.iou_threshold = 0.5                                        # detection counts when IoU >= this (docs/method.md §4.4)
    c.score_threshold = 0.5                                      # below this face score, "no face found"
    c.margin = 0.1                                               # crop margin around the box, as a fraction of its side
    c.align_margin = 0.1                                         # aligned (encoder) crop: square of side (1+2m)*max(h, w)
    c.feather = 0.06                                             # paste-back blend ramp, fraction of the crop side
    c.eval_scenes = {"smoke": 16, "small": 256, "paper": 512}[preset]   # val scenes for the in-training detection rate
    c.test_scenes = {"smoke": 32, "small": 1000, "paper": 3000}[preset]  # test scenes used by jaxdeid/reproduce/detection.py
    # smoke: enough steps (~40 s on 2 CPU cores) that the detector finds most normal-light test
    # faces, so the smoke reproduce (CI) covers the detected / private-face path, not only
    # the no-face fallback; the larger smoke lr gets there in a few hundred steps.
    # small: 1500 steps, what one 2-core CPU session trains (1.45 s/step with the enhanced-scene
    # mix); the normal-light detector of 3000 steps found every normal test face.
    c.train = train_defaults(preset, steps={"smoke": 600, "small": 1500, "paper": 30000},
                             lr={"smoke": 3e-3, "small": 1e-3, "paper": 1e-3}[preset],
                             batch_size={"smoke": 8, "small": 32, "paper": 64})
    return c
