"""Reproduce the light networks (paper §3.2.2 / §4.1, components 1 and 6 of its Fig. 2).

    python -m jaxdeid.reproduce.light --preset small      # from the shipped weights ~3 min; retraining ~40 min on 2 CPU cores

Trains what is missing through the same entry points as `jaxdeid train enhance|attenuate`
(resuming from checkpoints under ``<workdir>/light_*``), scores both networks on the
test split and writes

    results/light.json        machine-readable: enhance / attenuate / provenance (keys fixed by issue 3)
    results/light.md          ours beside the paper's final L_E = 0.091 and L_W = 0.121
    results/light_strip.png   low-light / enhanced / normal / attenuated test faces
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jaxdeid.light import load_trained, task_name, train
from jaxdeid.light.evaluate import evaluate
from jaxdeid.reproduce.common import parse_script_flags
from jaxdeid.results import markdown_table, provenance, write_json, write_markdown, write_png
from jaxdeid.store import loaded_from_store, read_manifest, shipped, store_dir, store_name
from jaxdeid.weights import final_train_loss, training_wall_s

PAPER = {"enhance": 0.091, "attenuate": 0.121}  # paper §4.1: final L_E and L_W


def ensure_trained(config, direction: str) -> None:
    """Trains (or resumes) a light network unless its weights come from the shipped store."""
    if not shipped(config, task_name(direction), lambda: load_trained(config, direction)):
        train(config, direction)  # resumes, or does nothing when already trained to light.train.steps


def training_record(config, direction: str) -> dict:
    """Final training loss (mean over the last 5 % of steps) and training wall time: from the
    workdir's metrics when trained here, else from the shipped weights' manifest entry."""
    name = task_name(direction)
    if loaded_from_store(config, name):
        entry = read_manifest(store_dir(config))["networks"][store_name(config, name)]
        return {"final_loss": entry.get("final_train_loss"), "train_wall_s": entry.get("train_wall_s")}
    return {"final_loss": final_train_loss(config.workdir, name),
            "train_wall_s": training_wall_s(config.workdir, name)}


def write_strip(path: Path, examples: dict, prov: dict) -> Path:
    """Rows low / enhanced / normal / attenuated, one column per test face, 2x nearest-neighbour."""

    rows = [("low-light input", "low"), ("enhanced", "enhanced"), ("normal (target)", "normal"),
            ("attenuated", "attenuated")]
    scale, label_w = 2, 120
    count, size = examples["low"].shape[0], examples["low"].shape[1] * scale
    canvas = Image.new("RGB", (label_w + count * size, len(rows) * size), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, key) in enumerate(rows):
        draw.text((4, r * size + size // 2 - 6), label, fill="black")
        for c in range(count):
            pixels = np.round(np.clip(examples[key][c], 0, 1) * 255).astype(np.uint8)
            tile = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
            canvas.paste(tile, (label_w + c * size, r * size))
    return write_png(path, canvas, prov)


def darkness_table(grid: dict) -> str:
    """A gamma x sigma table of mean SSIM (image counts in brackets), from `evaluate.by_darkness`."""
    g, s = grid["gamma_edges"], grid["sigma_edges"]
    header = ["γ \\ σ (×255)"] + [f"{255 * s[j]:.1f}–{255 * s[j + 1]:.1f}" for j in range(len(s) - 1)]
    rows = []
    for i in range(len(g) - 1):
        cells = [("—" if grid["count"][i][j] == 0 else f"{grid['mean'][i][j]:.3f} ({grid['count'][i][j]})")
                 for j in range(len(s) - 1)]
        rows.append([f"{g[i]:.1f}–{g[i + 1]:.1f}"] + cells)
    return markdown_table(header, rows)


def report(config, scores: dict, final: dict, prov: dict) -> str:
    enh, att, low = scores["enhance"], scores["attenuate"], scores["lowlight"]
    train_cfg = config.light.train
    gain = enh["psnr_enhanced"] - enh["psnr_lowlight"]
    checks = [
        ["enhanced PSNR - low-light PSNR (vs normal)", ">= 8 dB", f"{gain:.2f} dB", gain >= 8.0],
        ["enhanced SSIM (vs normal)", ">= 0.85", f"{enh['ssim_enhanced']:.3f}", enh["ssim_enhanced"] >= 0.85],
        ["attenuated / low-light target mean luminance", "within 10 %", f"{att['luminance_ratio']:.3f}",
         abs(att["luminance_ratio"] - 1.0) <= 0.10],
        ["attenuated SSIM vs noise-free low-light target (`ssim` in the JSON)", ">= 0.85",
         f"{att['ssim_noise_free']:.3f}", att["ssim_noise_free"] >= 0.85],
        ["attenuated SSIM vs the noisy low-light target", "(>= 0.85)", f"{att['ssim']:.3f}", att["ssim"] >= 0.85],
    ]
    mild = enh["ssim_enhanced_by_darkness"]["mean"][0][0]
    unmet_note = "" if all(c[3] for c in checks[:4]) else (
        "Where an SSIM criterion is not met, the table below says whether darkness or the network is the limit: "
        f"at the mildest LLNet draws (γ 2–3, σ below 8.3/255) the enhanced SSIM is {mild:.3f}. "
        + ("Since even those faces stay below 0.85, the network (its steps and width at this preset) limits SSIM "
           "before LLNet's noise does.\n" if mild < 0.85 else
           "Those faces reach 0.85, so it is the darkest, noisiest draws, where the dark half of the face is "
           "buried in noise, that pull the mean below it.\n"))
    # What the paper's final L_E says about its own SSIM: L = chi_mse·MSE + chi_ssim·(1 − SSIM)/2,
    # so SSIM = 1 − (2/chi_ssim)·(L − chi_mse·MSE); bounded below by the MSE = 0 case.
    chi_mse, chi_ssim = float(config.light.chi_mse), float(config.light.chi_ssim)
    our_mse = 10.0 ** (-enh["psnr_enhanced"] / 10.0)   # PSNR on [0, 1] images

    def ssim_implied(loss, mse):
        return 1.0 - 2.0 / chi_ssim * (loss - chi_mse * mse)

    paper_note = (
        f"**What the paper's own loss implies.** With L_E = {chi_mse:g}·MSE + {chi_ssim:g}·½(1 − SSIM), the "
        f"paper's final L_E = {PAPER['enhance']} means its enhancement network ended at SSIM = "
        f"{ssim_implied(PAPER['enhance'], 0.0):.3f} + {2.0 * chi_mse / chi_ssim:g}·MSE on its training pairs: "
        f"{ssim_implied(PAPER['enhance'], 0.0):.3f} at MSE 0, {ssim_implied(PAPER['enhance'], our_mse):.3f} at our "
        f"enhanced test MSE ({our_mse:.4f}). The issue's 0.85 is therefore well above what the paper reports for "
        f"its own network; our enhanced SSIM ({enh['ssim_enhanced']:.3f}) is to be read against that "
        f"{ssim_implied(PAPER['enhance'], 0.0):.2f}–{ssim_implied(PAPER['enhance'], our_mse):.2f}, "
        "and the 0.85 criterion stays in the table as the issue states it.\n")
    floor_note = ", which is why L_W > L_E (here as in the paper)" if final["attenuate"] > final["enhance"] else ""
    body = f"""# Light enhancement and attenuation networks (Retinex cascade)

Paper §3.2.2 / §4.1, components 1 and 6 of the paper's Fig. 2. Produced by `{prov.get('command', 'python -m jaxdeid.reproduce.light --preset ' + config.preset)}`.

## Final losses beside the paper

L_E = L_W = 1.0 · MSE + 0.5 · ½(1 − SSIM) (eqs. 2–4). "Final" = mean training loss over the last 5 % of steps;
"test" = the same loss on the test split ({scores['count']} images).

{markdown_table(["network", "paper final loss", "ours final (train)", "ours test"], [
    ["enhancement L_E", PAPER["enhance"], final["enhance"], enh["loss"]],
    ["attenuation L_W", PAPER["attenuate"], final["attenuate"], att["loss"]]], floatfmt=".4f")}

**Comparable or not?** Only loosely. The paper trains on 100,000 VGGFace2 pairs at an unstated resolution and
for an unstated number of steps; here the data are SynthFaces at {config.data.resolution} px
(procedural faces, not photographs) and the `{config.preset}` preset trains only
{train_cfg.steps} steps of batch {train_cfg.batch_size} with reduced widths. The loss also depends on the
LLNet noise level (σ_max = {config.lowlight.sigma_max:.4f}), on the SSIM window (11×11 Gaussian, σ 1.5) and, for L_W,
on the unpredictable noise realisation in the target: no network can reproduce that noise, so L_W has a floor
well above 0{floor_note}.

## Test split: PSNR and SSIM

{markdown_table(["image vs. its target", "PSNR (dB)", "SSIM"], [
    ["low-light input vs normal", enh["psnr_lowlight"], enh["ssim_lowlight"]],
    ["enhanced vs normal", enh["psnr_enhanced"], enh["ssim_enhanced"]],
    ["attenuated vs low-light target (noisy)", att["psnr"], att["ssim"]],
    ["attenuated vs noise-free low-light target (x^γ, same γ)", att["psnr_noise_free"], att["ssim_noise_free"]],
    ["reference: noise-free target vs noisy target", None, low["ssim_noise_free_vs_noisy"]]], floatfmt=".3f")}

Luminance (BT.601 luma): attenuated mean / low-light target mean = **{att['luminance_ratio']:.3f}** over the split
(mean per-image ratio {att['luminance_ratio_per_image']:.3f}; against the noise-free target
{att['luminance_ratio_noise_free']:.3f}).

### How the attenuation is scored, and why

LLNet draws γ ~ U(2, 5) and a noise level per image, so "the" low-light version of a normal face is random.
Two consequences shape this network and its scores:

* **Brightness.** γ cannot be read off the normal-light input, so the attenuation network takes the target's
  mean luminance as an extra constant input channel of its illumination-adjustment U-Net
  (`light.attenuate_level_input`, as KinD conditions its adjustment net on a brightness ratio). In the
  de-identification pipeline this is the mean luminance of the original low-light face, which the private image
  is meant to keep. The luminance ratio above is measured against the noisy target, the image the pipeline
  actually has; trained with MSE on noisy targets, the network predicts the *expected* low-light image, so its
  mean luminance tracks the target's, including the slight brightening that clipping the noise at 0 causes
  (which is why the ratio against the noise-free x^γ is above 1).
* **Structure.** The target's noise realisation cannot be predicted, and LLNet's noise (σ up to 25/255 on images
  whose mean luma is ≈ {low['mean_luminance']:.2f}) dominates SSIM's local variances: the noise-free x^γ itself
  scores only {low['ssim_noise_free_vs_noisy']:.3f} SSIM against the noisy target. SSIM ≥ 0.85 against the noisy
  target is therefore out of reach for any deterministic network, so `results/light.json`'s `attenuate.ssim` is
  the SSIM against the noise-free twin x^γ (same γ); the SSIM against the noisy target is in the table above.

## Done-when check (issue 3)

{markdown_table(["criterion", "needed", "measured", "met"], [[*c[:3], "yes" if c[3] else "no"] for c in checks])}

{unmet_note}
{paper_note}
### Where in LLNet's range the SSIM targets are reached

Mean SSIM per cell of LLNet's darkness parameters (γ rows, noise σ columns; equal thirds of each range; test
images per cell in brackets). The criteria above average over the whole range, so they are decided by how
far the darkest, noisiest draws fall below the mild ones.

Enhanced vs normal light:

{darkness_table(enh["ssim_enhanced_by_darkness"])}

Attenuated vs the noise-free low-light target:

{darkness_table(att["ssim_noise_free_by_darkness"])}

![low / enhanced / normal / attenuated](light_strip.png)

Rows of `light_strip.png`: low-light input, enhanced, normal-light target, attenuated (given the low-light input's
mean luminance); columns are the first test faces.

## Setup

* Network: decomposition ({config.light.decom_layers}× 3×3 conv, width {config.light.decom_channels}) → R (3 ch), L (1 ch);
  illumination-adjustment U-Net on concat(R, L) (depth {config.light.adjust_depth}, widths {config.light.adjust_channels}…{config.light.adjust_max_channels})
  → adjusted L' and a reflectance correction (R' = σ(logit R + ΔR), which removes the noise that lands in R);
  output R' · L'. The same module serves both directions.
* Training: Adam, warm-up + cosine to lr {train_cfg.lr}, {train_cfg.steps} steps, batch {train_cfg.batch_size},
  SynthFaces train split at {config.data.resolution} px, low-light pairs drawn afresh per step (key = seed, data position).
* Training wall time (from the metrics logs, summed over resumptions): enhancement
  {prov['train_wall_s']['enhance']:.0f} s, attenuation {prov['train_wall_s']['attenuate']:.0f} s on {prov['device']};
  the provenance's `wall_s` is this script's own run (training only what was missing, then the evaluation).
* Test: {scores['count']} SynthFaces test faces, one fixed LLNet draw per face.
"""
    return body


def main(argv=None) -> int:
    args, config = parse_script_flags(__doc__, argv, private_evaluation=False, storage_default="direct")
    start = time.perf_counter()

    for direction in ("enhance", "attenuate"):
        ensure_trained(config, direction)
    enhancer, attenuator = load_trained(config, "enhance"), load_trained(config, "attenuate")
    scores = evaluate(config, enhancer, attenuator, split="test", max_images=int(config.light.test_images))
    record = {d: training_record(config, d) for d in ("enhance", "attenuate")}
    final = {d: record[d]["final_loss"] for d in record}
    train_wall = {d: record[d]["train_wall_s"] for d in record}
    prov = provenance(config.preset, config.seed, time.perf_counter() - start, train_wall_s=train_wall)
    enh, att = scores["enhance"], scores["attenuate"]
    payload = {
        "enhance": {"final_loss": final["enhance"], "psnr_lowlight": enh["psnr_lowlight"],
                    "psnr_enhanced": enh["psnr_enhanced"], "ssim_enhanced": enh["ssim_enhanced"]},
        "attenuate": {"final_loss": final["attenuate"], "luminance_ratio": att["luminance_ratio"],
                      "ssim": att["ssim_noise_free"]},
        "by_darkness": {"enhance_ssim": enh["ssim_enhanced_by_darkness"],
                        "attenuate_ssim_noise_free": att["ssim_noise_free_by_darkness"]},
        "provenance": prov,
    }
    results = Path(config.results_dir)
    write_json(results / "light.json", payload)
    write_strip(results / "light_strip.png", scores["examples"], prov)
    write_markdown(results / "light.md", report(config, scores, final, prov), prov)
    print(json.dumps({k: v for k, v in payload.items() if k != "provenance"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
