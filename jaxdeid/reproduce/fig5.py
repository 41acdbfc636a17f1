"""Figure 5: SSIM, cosine similarity (CS) and PSNR between private and original low-light images.

    python -m jaxdeid.reproduce.fig5 --preset small            # trains what is missing, evaluates, writes results/

The paper prints no numbers, only that ours is higher than PGGAN, StyleGAN1 and
StyleGAN2 on all three. "Original" is the low-light input frame the private image was
made from. Main numbers: the FACE REGION (aligned square crop around the true face box,
the pipeline's own crop geometry, taken from both images); the whole frame (where
paste-back leaves the background untouched, so scores are higher) is reported too.
CS is the paper's cosine similarity of the flattened pixel vectors. Writes

  results/fig5.json          {method: {"ssim", "cs", "psnr"}, ..., "provenance"}   (face region)
  results/fig5_details.json  per method: face / frame / face_success_only scores with 95 % CIs
  results/fig5.md     face-region and whole-frame tables with 95 % CIs over identities
  results/fig5.png    SSIM / CS / PSNR bars per method (face region)
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from jaxdeid import results
from jaxdeid.eval import protocol
from jaxdeid.reproduce import common

METRICS = (("ssim", "SSIM"), ("cs", "CS"), ("psnr", "PSNR (dB)"))


def _cell(scores: dict, key: str) -> str:
    lo, hi = scores["ci95"][key]
    return f"{scores[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(config, rows: dict, evalset, outputs: dict) -> str:
    header = ["method"] + [label for _, label in METRICS]
    face = [[common.DISPLAY[m]] + [_cell(r["face"], k) for k, _ in METRICS] for m, r in rows.items()]
    frame = [[common.DISPLAY[m]] + [_cell(r["frame"], k) for k, _ in METRICS] for m, r in rows.items()]
    success_only = [[common.DISPLAY[m]] + ([r["face_success_only"][k] for k, _ in METRICS] if r["face_success_only"]
                                       else ["no success"] * len(METRICS)) + [f"{outputs[m]['success'].mean():.3f}"]
                    for m, r in rows.items()]
    baselines = [m for m in rows if m != "ours"]
    verdict = ""
    if "ours" in rows and baselines:
        above = {k: all(rows["ours"]["face"][k] > rows[b]["face"][k] for b in baselines) for k, _ in METRICS}
        verdict = ("Ours above every baseline (face region, paper's claim): "
                   + ", ".join(f"{label} {'yes' if above[k] else 'no'}" for k, label in METRICS) + ".")
    return f"""# Figure 5: similarity of private images to the original low-light images

{common.untrained_note(outputs)}
{evalset.lowlight.shape[0]} low-light SynthFaces test scenes, preset `{config.preset}`; each private image is compared
with the low-light frame it was made from. Mean over scenes, 95 % bootstrap intervals over identities. Scenes whose
face could not be de-identified are scored as released (the pixelated fail-closed fallback).

## Face region (main numbers, `fig5.json` top level)

Aligned square crop around the TRUE face box (side (1 + 2·{config.crop.align_margin}) × the box's longer side,
resampled to {config.data.resolution} px) from both images.

{results.markdown_table(header, face)}

{verdict}

The paper (Fig. 5) prints no values, only that ours is higher than all three baselines on all three metrics.

## Whole frame ({config.data.scene_resolution} px)

{results.markdown_table(header, frame)}

## Face region, successful scenes only

{results.markdown_table(header + ["success rate"], success_only)}

![SSIM, CS, PSNR](fig5.png)

Why ours should score higher: ours edits the face in normal light and the attenuation network restores the input's
brightness (it is told the input face's mean luminance), while the baselines invert and perturb the dark, noisy crop
directly with generators trained on normal-light faces, so their faces leave the low-light range.
"""


def main(argv=None) -> int:
    run = common.start_evaluation(__doc__, argv)
    args, config, out_dir = run.args, run.config, run.out_dir
    evalset, outputs = common.collect(config, args)
    rows = {m: protocol.quality_scores(config, o, evalset) for m, o in outputs.items()}
    prov = run.provenance(evalset, outputs, region="face (aligned crop at the true box); whole frame under 'frame'")
    payload = {m: {k: r["face"][k] for k, _ in METRICS} for m, r in rows.items()}
    results.write_json(out_dir / "fig5.json", {**payload, "provenance": prov})
    results.write_json(out_dir / "fig5_details.json", {**rows, "provenance": prov}, history=False)
    results.write_markdown(out_dir / "fig5.md", markdown(config, rows, evalset, outputs), prov)
    _chart(out_dir / "fig5.png", rows, config, evalset, prov)
    for m, r in rows.items():
        print(f"{m}: face " + ", ".join(f"{k} {r['face'][k]:.3f}" for k, _ in METRICS), flush=True)
    print(f"wrote {out_dir}/fig5.json, fig5.md, fig5.png in {run.elapsed():.1f}s")
    return 0


def _chart(path: Path, rows: dict, config, evalset, prov) -> None:

    matplotlib.use("Agg")

    methods = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=110)
    for ax, (key, label) in zip(axes, METRICS):
        values = [rows[m]["face"][key] for m in methods]
        ci = np.array([rows[m]["face"]["ci95"][key] for m in methods])
        err = np.stack([np.maximum(0, values - ci[:, 0]), np.maximum(0, ci[:, 1] - values)])
        ax.bar(np.arange(len(methods)), values, yerr=err, capsize=3,
               color=["C3" if m == "ours" else "C0" for m in methods])
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels([common.DISPLAY[m] for m in methods], fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"Fig. 5: private vs original low-light face, {evalset.lowlight.shape[0]} test scenes "
                 f"(preset {config.preset})", fontsize=9)
    fig.tight_layout()
    results.write_png(path, fig, prov)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
