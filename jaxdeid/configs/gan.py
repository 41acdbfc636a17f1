"""Face generation networks: StyleGAN2 (ours), StyleGAN1 and PGGAN baselines (component 4).

Knob names follow NVIDIA's stylegan2-ada-pytorch `Generator` so that throughput can
be compared at an identical configuration: channels(res) = min(channel_base // res, channel_max).
"""

import ml_collections

from ._train import train_defaults


def section(preset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.arch = "stylegan2"                                  # stylegan2 | stylegan1 | pggan
    c.z_dim = {"smoke": 32, "small": 256, "paper": 512}[preset]
    c.w_dim = {"smoke": 32, "small": 256, "paper": 512}[preset]
    c.num_layers = {"smoke": 2, "small": 8, "paper": 8}[preset]   # mapping network depth
    c.channel_base = {"smoke": 1024, "small": 8192, "paper": 32768}[preset]
    # small = the paper preset's widths x 0.25 (channel_base / 4, channel_max / 4): 128 channels at every
    # resolution up to 64 px: 1.17 TFLOP per StyleGAN2 training step (with R1) at batch 32 (XLA cost
    # analysis of the lowered step; 1.32 before G's up-sampling convolution ran at the input resolution;
    # about twice that with channel_max 256). A GPU job, not a CPU one, even so.
    c.channel_max = {"smoke": 64, "small": 128, "paper": 512}[preset]
    c.img_resolution = {"smoke": 32, "small": 64, "paper": 128}[preset]
    c.r1_gamma = {"smoke": 1.0, "small": 1.0, "paper": 10.0}[preset]
    c.r1_interval = 16                                   # lazy R1 regularisation
    c.ema_half_life_images = {"smoke": 100, "small": 10000, "paper": 10000}[preset]
    c.mbstd_group = 4
    c.train_final_resolution = True                       # skip progressive growing (every preset): train at the final resolution
    c.pggan_stable_images = {"smoke": 64, "small": 30000, "paper": 600000}[preset]  # PGGAN: images per stable phase
    c.pggan_fade_images = {"smoke": 64, "small": 30000, "paper": 600000}[preset]    # PGGAN: images per fade-in
    c.mapping_lr_multiplier = 0.01                        # StyleGAN mapping network learns 100x slower
    c.style_mixing_prob = 0.9                             # StyleGANs: mixing regularisation (StyleGAN §3.1)
    c.adam_beta1 = 0.0                                    # StyleGAN2's Adam betas (0, 0.99)
    c.adam_beta2 = 0.99
    c.sample_grid = 16                                    # images in the sample grid written at each eval
    c.train = train_defaults(preset, steps={"smoke": 4, "small": 5000, "paper": 200000},
                             lr=2e-3, batch_size={"smoke": 8, "small": 32, "paper": 32})
    c.train.schedule = "constant"                         # GANs train at a constant learning rate
    c.train.warmup_steps = 1                              # ... with no warm-up
    return c
