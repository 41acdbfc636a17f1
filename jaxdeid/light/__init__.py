"""Light enhancement and attenuation networks (paper §3.2.2, components 1 and 6).

    model, variables = load_trained(config, "enhance")     # after `jaxdeid train enhance`
    enhanced = model.apply(variables, low_light_images)      # [B, H, W, 3] in [0, 1]
    model, variables = load_trained(config, "attenuate")   # after `jaxdeid train attenuate`
    private_low = model.apply(variables, images, level)      # level: target mean luminance [B]

Modules: `retinex` (the Flax networks), `losses` (eqs. 2-4), `train` (tasks for the
shared loop, `load_trained`), `evaluate` (test-split scores used by jaxdeid/reproduce/light.py).
"""

from .losses import light_loss, mse_loss, ssim_loss
from .retinex import Decomposition, IlluminationAdjustment, RetinexNet, luminance, make_model, mean_luminance
from .train import DIRECTIONS, load_trained, make_task, task_name, train

__all__ = ["RetinexNet", "Decomposition", "IlluminationAdjustment", "make_model", "luminance", "mean_luminance",
           "light_loss", "mse_loss", "ssim_loss", "make_task", "train", "load_trained", "task_name", "DIRECTIONS"]
