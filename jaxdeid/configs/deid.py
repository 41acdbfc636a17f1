"""The private step: latent-noise loop and L_F fine-tuning (components 4, 5, 8; docs/method.md §4.6).

De-identify a folder:  jaxdeid deidentify IN OUT --preset small [--method ours|pggan|stylegan1|stylegan2]
Fine-tune G with L_F:  jaxdeid train deid --preset small        (eq. 8; optional, `ours` uses it when present)
"""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "ours"             # ours | pggan | stylegan1 | stylegan2 (docs/method.md §4.5 baselines)
    c.max_iters = {"smoke": 8, "small": 32, "paper": 64}[preset]   # cap; hitting it is failure
    c.noise = "additive"          # additive: w + s*n; multiplicative: w * (1 + s*n)
    c.sigma_start = 0.05          # s_0
    c.sigma_growth = 1.25         # s_k = s_0 * growth**k
    # Which faces the white-box judges compare with the original. "both": the normal-light
    # synthesized face AND the released (attenuated) face must each fall below the threshold
    # (stricter: a released face that only fools the judges because it is dark would
    # otherwise pass); "output": only the released face. Baselines have one face anyway.
    c.judge_views = "both"
    c.valid_luminance_ratio = 0.5  # docs/method.md §4.4: valid needs face mean luminance >= this x the input face's
    c.min_face_pixels = 8.0       # a detected box narrower than this (frame pixels) is "no face found"
    c.fallback_cells = 4          # fail-closed: a failed face is pixelated to this many cells a side
    c.fallback_margin = 0.35      # ... over a square grown by this fraction per side (hair, ears, box error)
    c.fallback_frame_cells = 8    # no face found: the whole frame is pixelated to this many cells a side
    # A second face: a detector heat-map cell outside the first face's aligned square scoring at
    # least max(this, crop.score_threshold) makes the frame a whole-frame fallback (flag
    # multiple_faces; the step replaces one face per frame). The floor matters where
    # crop.score_threshold is forced to 0 (benchmarks, tests): there every cell would count.
    c.second_face_threshold = 0.5
    c.chi = (1.0, 0.5, 0.3, 0.1)  # eq. (8): L_D, L_s, L_A, L_C weights
    c.la_margin = 0.1             # L_A hinge margin below recognizer.threshold (losses.py)
    c.finetune_sigma = 0.5        # latent noise scale used to make private faces while fine-tuning G
    c.train = train_defaults(preset, steps={"smoke": 4, "small": 1000, "paper": 20000},
                             lr=1e-4, batch_size={"smoke": 4, "small": 16, "paper": 16})
    # Dtype the networks of the private step compute in. "bfloat16" casts each network's
    # variables and inputs at the call (faster on GPUs/TPUs); similarities, thresholds, latent
    # noise and paste-back stay float32 (deid/step.py: cast_floating). Accuracy loss: benchmarks/.
    c.compute_dtype = "float32"
    c.batch_size = {"smoke": 2, "small": 16, "paper": 16}[preset]  # frames per jitted step in `deidentify`
    return c
