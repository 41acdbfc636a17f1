"""Figure 6: success rate of generating low-light private images, ours vs three baselines.

    python -m jaxdeid.reproduce.fig6 --preset small            # trains what is missing, evaluates, writes results/

Per low-light test scene (docs/method.md §4.4) success needs all three parts: the face was
detected (score above threshold and IoU >= 0.5 with the true box), the private face is
a valid image (finite, mean luminance >= 1/2 of the input face's) and every white-box
recognizer rejects it within the noise loop's iteration cap. Writes

  results/fig6.json   {"ours"|"pggan"|"stylegan1"|"stylegan2": {"success", "detected", "valid", "deidentified"},
                       "provenance"}   (rates in [0, 1])
  results/fig6.md     ours beside the paper's 100 / 42.9 / 46.2 / 68.3 %, with 95 % CIs over identities
  results/fig6.png    bar chart of the four rates per method, paper's success rate marked

The private outputs are shared with table3/fig5/grids through the cache under
runs/<preset>/eval/ (jaxdeid.reproduce.common).
"""

from __future__ import annotations

import sys

from jaxdeid import results
from jaxdeid.eval import protocol
from jaxdeid.reproduce import common

# Paper Fig. 6 (success rate of low-light private images).
PAPER_FIG6 = {"ours": 1.000, "pggan": 0.429, "stylegan1": 0.462, "stylegan2": 0.683}
PARTS = ("success", "detected", "valid", "deidentified")


def markdown(config, rows: dict, evalset, outputs: dict) -> str:
    header = ["method", "success (95 % CI)", "paper success", "detected", "valid", "de-identified",
              "mean iterations", "hit the cap", "fallback (pixelated)", "successes past half the cap"]
    table = []
    for method, r in rows.items():
        ci = r["ci95"]
        table.append([common.DISPLAY[method], f"{r['success']:.3f} [{ci['success'][0]:.3f}, {ci['success'][1]:.3f}]",
                      PAPER_FIG6[method]] + [f"{r[k]:.3f} [{ci[k][0]:.3f}, {ci[k][1]:.3f}]"
                                              for k in ("detected", "valid", "deidentified")]
                     + [r["mean_iterations"], f"{r['capped']:.3f}", f"{r['fallback']:.3f}",
                        "—" if r["late_successes"] is None else f"{r['late_successes']:.3f}"])
    judges = ", ".join(next(iter(outputs.values()))["meta"]["judges"])
    reject = ["| method | " + " | ".join(f"{j} rejects" for j in next(iter(rows.values()))["reject_rate"]) + " |",
              "|---|" + "---|" * len(next(iter(rows.values()))["reject_rate"])]
    for method, r in rows.items():
        reject.append(f"| {common.DISPLAY[method]} | " + " | ".join(f"{v:.3f}" for v in r["reject_rate"].values()) + " |")
    notes = "\n".join(f"* {common.DISPLAY[m]}: generator {o['meta']['notes'].get('generator', 'trained')}, "
                      f"{'cached' if o['meta']['cached'] else 'computed'} outputs"
                      for m, o in outputs.items())
    return f"""# Figure 6: success rate of generating low-light private images

{common.untrained_note(outputs)}
{evalset.lowlight.shape[0]} low-light scenes of the SynthFaces test split ({config.data.scene_resolution} px frames,
{config.data.resolution} px faces), preset `{config.preset}`, darkened once with LLNet synthesis (fixed key).
White-box judges inside the loop and for "de-identified": {judges}; threshold {config.recognizer.threshold}
(cosine); iteration cap {config.deid.max_iters}; noise {config.deid.noise}, s_k = {config.deid.sigma_start} x
{config.deid.sigma_growth}^k. Rates are over all scenes; intervals: 95 % bootstrap over identities.

{results.markdown_table(header, table)}

Paper (Fig. 6): ours 100 %, PGGAN 42.9 %, StyleGAN1 46.2 %, StyleGAN2 68.3 % (VGGFace2, full-size networks).

**Parts** (docs/method.md §4.4): *detected* = the cropping network's score >= {config.crop.score_threshold} and IoU >=
{config.crop.iou_threshold} with the true box; *valid* = the generated face is finite and its mean luminance is at
least ½ of the input face's; *de-identified* = every judge's cosine similarity to the face the generator started from
(ours: the enhanced crop; baselines: the low-light crop, docs/method.md §4.5) is below the threshold within the cap. A face
that is not detected is never judged, so it is not de-identified either. Failed scenes are released as the
step's fail-closed fallback (pixelated face), never as the original.

Per-judge rejection rates (the last similarity each judge gave):

{chr(10).join(reject)}

![success rates](fig6.png)

{notes}
"""


def main(argv=None) -> int:
    run = common.start_evaluation(__doc__, argv)
    args, config, out_dir = run.args, run.config, run.out_dir
    evalset, outputs = common.collect(config, args)
    rows = {m: protocol.success_parts(config, o, evalset) for m, o in outputs.items()}
    prov = run.provenance(evalset, outputs)
    payload = {m: {k: r[k] for k in PARTS} for m, r in rows.items()}
    results.write_json(out_dir / "fig6.json", {**payload, "provenance": prov})
    results.write_markdown(out_dir / "fig6.md", markdown(config, rows, evalset, outputs), prov)
    common.bar_chart(out_dir / "fig6.png", {m: {k: r[k] for k in PARTS} for m, r in rows.items()},
                 f"Fig. 6: success on {evalset.lowlight.shape[0]} low-light test scenes (preset {config.preset})",
                 "rate", paper={m: PAPER_FIG6[m] for m in rows},
                 errors={m: {k: r["ci95"][k] for k in PARTS} for m, r in rows.items()}, ylim=(0, 1.05), prov=prov)
    for m, r in rows.items():
        print(f"{m}: " + ", ".join(f"{k} {r[k]:.3f}" for k in PARTS), flush=True)
    print(f"wrote {out_dir}/fig6.json, fig6.md, fig6.png in {run.elapsed():.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
