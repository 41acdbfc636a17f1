"""Test-split scores of the light networks (what jaxdeid/reproduce/light.py reports).

For every test face x (normal light) we synthesise its low-light version
y = LLNet(x) with a per-image key (so the pairs never depend on batching), then:

* enhancement: PSNR / SSIM against x of the low-light input y and of the enhanced E(y);
* attenuation: W(x, level = mean luminance of y) against the low-light target y.
  y holds one random noise realisation that no network can predict, so besides the
  score against y we also score against y's noise-free twin x ** gamma (same gamma)
  and report the *ceiling*: SSIM(x ** gamma, y), the best any deterministic output
  could be expected to reach against y at that noise level.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..data import get_source
from ..metrics import get_metric
from .losses import light_loss
from .retinex import RetinexNet, mean_luminance
from .train import TEST_PAIRS_TAG, darken_each, make_apply, pair_keys

# Reported numbers come from registered metrics, looked up by name (`jaxdeid.metrics.registry`).
ssim, psnr = get_metric("ssim"), get_metric("psnr")


def _pairs(config, normal, example_ids):
    keys = pair_keys(int(config.seed), TEST_PAIRS_TAG, example_ids)
    return darken_each(keys, normal, config.lowlight, return_params=True)


def by_darkness(values: np.ndarray, gamma: np.ndarray, sigma: np.ndarray, lowlight_cfg, bins: int = 3) -> dict:
    """Mean of per-image `values` in a bins x bins grid of LLNet's gamma and noise sigma.

    The grid splits each parameter's range (gamma in [gamma_min, gamma_max], sigma in
    [0, sigma_max]) into equal parts, so it shows where in LLNet's distribution a score is
    reached and where the darkest, noisiest draws pull the mean down.
    """
    gamma_edges = np.linspace(lowlight_cfg.gamma_min, lowlight_cfg.gamma_max, bins + 1)
    sigma_edges = np.linspace(0.0, lowlight_cfg.sigma_max, bins + 1)
    g = np.clip(np.searchsorted(gamma_edges, gamma, side="right") - 1, 0, bins - 1)
    s = np.clip(np.searchsorted(sigma_edges, sigma, side="right") - 1, 0, bins - 1)
    mean = np.full((bins, bins), np.nan)
    count = np.zeros((bins, bins), np.int64)
    for i in range(bins):
        for j in range(bins):
            cell = (g == i) & (s == j)
            count[i, j] = int(cell.sum())
            if count[i, j]:
                mean[i, j] = float(values[cell].mean())
    return {"gamma_edges": gamma_edges.tolist(), "sigma_edges": sigma_edges.tolist(),
            "mean": mean.tolist(), "count": count.tolist()}


def evaluate(config, enhancer: Optional[tuple[RetinexNet, dict]], attenuator: Optional[tuple[RetinexNet, dict]],
             *, split: str = "test", max_images: int = 0, batch_size: int = 64, keep_examples: int = 6) -> dict:
    """Scores of the trained networks on `split`; each argument is ``(model, variables)`` or None.

    Returns ``{"count", "enhance": {...}, "attenuate": {...}, "examples": {...}}``: means over
    the images of per-image PSNR (dB) / SSIM, the mean test loss (eq. 4), the luminance
    ratio (attenuated mean luminance / low-light target mean luminance, as a ratio of the
    split means and as the mean per-image ratio) and the first `keep_examples` images.
    """

    source = get_source(config, split)
    count = len(source) if not max_images else min(int(max_images), len(source))
    chi = (config.light.chi_mse, config.light.chi_ssim)

    @jax.jit
    def score(enh_params, att_params, normal, low, low_clean):
        out = {"psnr_lowlight": psnr(low, normal), "ssim_lowlight": ssim(low, normal),
               "lum_low": mean_luminance(low), "lum_low_clean": mean_luminance(low_clean),
               "ssim_ceiling": ssim(low_clean, low)}
        images = {}
        if enhancer is not None:
            enhanced = make_apply(enhancer[0])(enh_params, low)
            out.update(psnr_enhanced=psnr(enhanced, normal), ssim_enhanced=ssim(enhanced, normal),
                       loss_enhance=jnp.full(normal.shape[:1], light_loss(enhanced, normal, *chi)[0]))
            images["enhanced"] = enhanced
        if attenuator is not None:
            attenuated = make_apply(attenuator[0])(att_params, normal, mean_luminance(low))
            out.update(lum_attenuated=mean_luminance(attenuated), ssim_attenuated=ssim(attenuated, low),
                       ssim_attenuated_clean=ssim(attenuated, low_clean), psnr_attenuated=psnr(attenuated, low),
                       psnr_attenuated_clean=psnr(attenuated, low_clean),
                       loss_attenuate=jnp.full(normal.shape[:1], light_loss(attenuated, low, *chi)[0]))
            images["attenuated"] = attenuated
        return out, images

    enh_params = enhancer[1]["params"] if enhancer is not None else None
    att_params = attenuator[1]["params"] if attenuator is not None else None
    per_image: dict[str, list[np.ndarray]] = {}
    examples: dict[str, np.ndarray] = {}
    for start in range(0, count, batch_size):
        ids = np.arange(start, min(start + batch_size, count))
        normal = jnp.asarray(source.get(ids)["image"])
        low, low_clean, gamma, sigma = _pairs(config, normal, ids)
        out, images = score(enh_params, att_params, normal, low, low_clean)
        out = {**out, "gamma": gamma, "sigma": sigma}
        for key, value in out.items():
            per_image.setdefault(key, []).append(np.asarray(value, np.float64))
        if start == 0:
            examples = {"low": np.asarray(low[:keep_examples]), "normal": np.asarray(normal[:keep_examples]),
                        **{k: np.asarray(v[:keep_examples]) for k, v in images.items()}}
    values = {k: np.concatenate(v) for k, v in per_image.items()}
    mean = {k: float(np.mean(v)) for k, v in values.items()}

    def means(**names):   # {reported name: key of `values`}
        return {name: mean[key] for name, key in names.items()}

    result = {"count": count, "examples": examples,
              "lowlight": means(psnr="psnr_lowlight", ssim="ssim_lowlight", mean_luminance="lum_low",
                                ssim_noise_free_vs_noisy="ssim_ceiling")}
    if enhancer is not None:
        result["enhance"] = {**means(loss="loss_enhance", psnr_lowlight="psnr_lowlight", psnr_enhanced="psnr_enhanced",
                                     ssim_enhanced="ssim_enhanced", ssim_lowlight="ssim_lowlight"),
                             "ssim_enhanced_by_darkness": by_darkness(values["ssim_enhanced"], values["gamma"],
                                                                      values["sigma"], config.lowlight)}
    if attenuator is not None:
        lum_att, lum_low = values["lum_attenuated"], values["lum_low"]
        result["attenuate"] = {
            **means(loss="loss_attenuate"),
            "luminance_ratio": float(lum_att.mean() / lum_low.mean()),
            "luminance_ratio_per_image": float(np.mean(lum_att / np.maximum(lum_low, 1e-6))),
            "luminance_ratio_noise_free": float(lum_att.mean() / values["lum_low_clean"].mean()),
            **means(ssim="ssim_attenuated", ssim_noise_free="ssim_attenuated_clean", ssim_ceiling="ssim_ceiling",
                    psnr="psnr_attenuated", psnr_noise_free="psnr_attenuated_clean"),
            "ssim_noise_free_by_darkness": by_darkness(values["ssim_attenuated_clean"], values["gamma"],
                                                       values["sigma"], config.lowlight)}
    return result
