"""Quality of the three generators and their latent encoders (docs/method.md §1 components 3-4, issue 5).

    python -m jaxdeid.reproduce.generators --preset smoke     # tiny networks, a few steps each (CI)
    python -m jaxdeid.reproduce.generators --preset small     # hours on 2 CPU cores; run it on a GPU

For each generator (StyleGAN2 = ours, StyleGAN1 and PGGAN = baselines) it trains whatever is
missing through the shared loop (`jaxdeid.train.run`, resuming from ``<workdir>/gan_<arch>``
and ``<workdir>/encoder_<arch>``; the same tasks as `jaxdeid train gan|encoder --arch ...`),
then measures

  * Fréchet distance (``jaxdeid.metrics.frechet_distance``; d² = ‖μ₁−μ₂‖² +
    Tr(Σ₁+Σ₂−2(Σ₁Σ₂)^{1/2})) between the recognizer embeddings of N samples of the EMA
    generator (truncation ψ = 1, random noise inputs) and of the real test faces, plus KID
    (``kernel_distance``) beside it in the Markdown;
  * inversion quality: SSIM and PSNR of G(E(x)) against x on the test split;
  * parameter counts of G (the JSON's ``params``), D and the encoder.

Features for the two distances are the **L2-normalised embeddings** of a trained project
recognizer (default ResNet50, ``--recognizer``; trained through its own task when missing).
Why the embedding and not the pooled backbone features: it is the space in which every
identity decision of the project is made (cosine threshold 0.3), and its size
(``recognizer.embed_dim``: 32 / 128 / 512 for smoke / small / paper) is below the number of
real test faces at ``small`` (≈ 320), so both covariances are estimated from more samples than
dimensions; the pooled backbone features (256 / 512 / 2048 wide) are not. The values are
therefore *not* comparable with Inception-based FIDs in the literature, only with each other.

Writes (through ``jaxdeid.results``):

    results/generators.json        {"stylegan2"|"stylegan1"|"pggan": {"frechet_distance", "inversion_ssim",
                                    "inversion_psnr", "params"}, "provenance"}  (keys fixed by issue 5)
    results/generators.md          the table, the sample counts and the done-when check
    results/samples_<arch>.png     16 samples of the EMA generator (fixed z, constant noise)
    results/inversion_<arch>.png   test faces (top row) and their reconstructions G(E(x)) (bottom row)

Exit status: 0 all three measured; 3 partial (an arch or an encoder failed: its numbers are
null and the error is in the provenance and the Markdown); 1 nothing measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from jaxdeid.commands.common import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, add_config_flags, config_from_args
from jaxdeid.data import get_source
from jaxdeid.encoder import make_encoder, train as encoder_train
from jaxdeid.encoder.train import generator_lod
from jaxdeid.gan import ARCHS as GENERATOR_ARCHS, make_discriminator, make_generator, synthesis_options
from jaxdeid.gan.samples import fixed_latents
from jaxdeid.gan.train import load_trained as load_generator, make_task
from jaxdeid.metrics import get_metric
from jaxdeid.recognizers.evaluate import embed_source
from jaxdeid.recognizers.train import load_trained, train
from jaxdeid.results import markdown_table, provenance, write_json, write_markdown, write_png
from jaxdeid.train import run

# Every reported number comes from a registered metric, looked up by name (`jaxdeid.metrics.registry`).
frechet_distance, kernel_distance = get_metric("frechet_distance"), get_metric("kernel_distance")
ssim, psnr = get_metric("ssim"), get_metric("psnr")

ARCHS = GENERATOR_ARCHS
DISPLAY = {"stylegan2": "StyleGAN2 (ours)", "stylegan1": "StyleGAN1", "pggan": "PGGAN"}
DEFAULT_SAMPLES = {"smoke": 64, "small": 2000, "paper": 10000}   # generated faces for the distances
TARGET_SSIM = 0.7            # issue 5 done-when: StyleGAN2 encoder inversion SSIM >= 0.7 at `small`
GRID_SAMPLES = 16            # samples_<arch>.png
GRID_INVERSIONS = 8          # columns of inversion_<arch>.png


# --------------------------------------------------------------------------- training (shared loop)


def train_generator(config, arch: str) -> None:
    """Trains (or resumes, or does nothing when done) `gan_<arch>` to ``gan.train.steps``."""

    task = make_task(config, arch)
    run(task, config.gan.train, config.workdir, seed=config.seed, desc=task.name)




def train_encoder(config, arch: str) -> None:
    """Trains (or resumes) `encoder_<arch>`, the encoder inverting generator `arch`."""


    task = encoder_train.make_task(config, arch)
    run(task, config.encoder.train, config.workdir, seed=config.seed, desc=task.name)


def load_encoder(config, arch: str):
    """(module, variables, generator variables or None) of the trained encoder for `arch`.

    ``module.apply(variables, x)`` returns ready-to-synthesize latents. The encoder keeps the
    frozen generator it was trained against; inversion is measured with that one, so a generator
    retrained after its encoder cannot make the encoder look worse than it is.
    """

    try:
        loaded = encoder_train.load_trained(config, arch, with_generator=True)
    except TypeError:  # an API without with_generator: (module, variables) or variables
        loaded = encoder_train.load_trained(config, arch)
    if not isinstance(loaded, tuple):
        return make_encoder(config, arch), loaded, None
    return loaded[0], loaded[1], (loaded[2] if len(loaded) > 2 else None)


def load_or_train_recognizer(config, arch: str):
    """The trained recognizer `arch`; trains it through its own task first when no checkpoint exists."""

    try:
        return load_trained(config, arch), False
    except FileNotFoundError:
        print(f"[generators] recognizer {arch} not trained yet: training it ({config.recognizer.train.steps} steps)",
              flush=True)
        train(config, arch)
        return load_trained(config, arch), True


# --------------------------------------------------------------------------- measurements (jitted, batched)


def count_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def discriminator_params(config, arch: str) -> int:
    """D's parameter count from shapes only (`jax.eval_shape`: no initialisation is computed)."""

    D = make_discriminator(config.gan, arch)
    resolution = int(config.gan.img_resolution)
    shapes = jax.eval_shape(D.init, jax.random.PRNGKey(0), jnp.zeros((config.gan.mbstd_group, resolution,
                                                                        resolution, 3)))
    return count_params(shapes["params"])


def evaluation_lod(config, arch: str) -> float:
    """PGGAN's level of detail at the end of training; the encoder trains against the same one."""

    return generator_lod(config, arch)


def make_generate(G, arch: str, lod: float):
    """Jitted ``generate(g_vars, z, key, noise_mode) -> images`` in [0, 1] (clipped), truncation ψ = 1."""
    extra = synthesis_options(arch, lod)

    def generate(g_vars, z, key, noise_mode):
        ws = G.apply(g_vars, z, method="map", truncation_psi=1.0)
        return G.apply(g_vars, ws, method="synthesize", noise_mode=noise_mode, clip=True, rngs={"noise": key},
                       **extra)

    return jax.jit(generate, static_argnames=("noise_mode",))


def make_embed_generated(generate, embed, z_dim: int, batch_size: int):
    """Jitted ``step(g_vars, r_vars, key) -> embeddings [batch_size, E]`` of fresh samples (z ~ N(0, I), random noise)."""

    @jax.jit
    def step(g_vars, r_vars, key):
        k_z, k_noise = jax.random.split(key)
        z = jax.random.normal(k_z, (batch_size, z_dim))
        return embed(r_vars, generate(g_vars, z, k_noise, "random"))

    return step


def generated_embeddings(step, g_vars, r_vars, count: int, batch_size: int, seed: int) -> np.ndarray:
    """Recognizer embeddings [count, E] (float64, host) of `count` generated faces; batch i uses key fold_in(seed, i)."""
    base = jax.random.PRNGKey(seed)
    chunks = [step(g_vars, r_vars, jax.random.fold_in(base, i)) for i in range(-(-count // batch_size))]
    return np.asarray(jax.device_get(jnp.concatenate(chunks)[:count]), np.float64)


def make_reconstruct(G, E, arch: str, lod: float):
    """Jitted ``reconstruct(e_vars, g_vars, x) -> (G(E(x)) clipped, ssim [B], psnr [B])``."""

    extra = synthesis_options(arch, lod)

    @jax.jit
    def reconstruct(e_vars, g_vars, x):
        latents = E.apply(e_vars, x)
        recon = G.apply(g_vars, latents, method="synthesize", noise_mode="const", clip=True, **extra)
        return recon, ssim(recon, x), psnr(recon, x)

    return reconstruct


def inversion_scores(reconstruct, e_vars, g_vars, source, batch_size: int, max_images: int):
    """Mean SSIM / PSNR of G(E(x)) vs x over the split, and the first faces with their reconstructions."""
    count = len(source) if max_images <= 0 else min(max_images, len(source))
    ssims, psnrs, reals, recons = [], [], [], []
    for start in range(0, count, batch_size):
        chunk = np.arange(start, min(start + batch_size, count))
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk))])  # one compiled shape
        x = np.asarray(source.get(padded)["image"], np.float32)
        recon, s, p = reconstruct(e_vars, g_vars, x)
        ssims.append(np.asarray(s)[:len(chunk)])
        psnrs.append(np.asarray(p)[:len(chunk)])
        if start == 0:
            keep = min(GRID_INVERSIONS, len(chunk))
            reals, recons = x[:keep], np.asarray(recon)[:keep]
    ssims, psnrs = np.concatenate(ssims), np.concatenate(psnrs)
    return {"ssim": float(ssims.mean()), "psnr": float(psnrs.mean()), "count": int(count),
            "real": reals, "reconstructed": recons}


# --------------------------------------------------------------------------- figures


def save_figure(path: Path, rows: list[tuple[str, np.ndarray]], prov: dict, scale: int = 2) -> Path:
    """Rows of float [N, H, W, 3] images (labelled on the left), nearest-neighbour upscaled, provenance in the PNG."""

    label_w = 110 if any(label for label, _ in rows) else 0
    size = rows[0][1].shape[1] * scale
    columns = max(len(images) for _, images in rows)
    canvas = Image.new("RGB", (label_w + columns * (size + 1) + 1, len(rows) * (size + 1) + 1), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        y = 1 + r * (size + 1)
        if label:
            draw.text((4, y + size // 2 - 6), label, fill="black")
        for c, image in enumerate(images):
            pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
            canvas.paste(Image.fromarray(pixels).resize((size, size), Image.NEAREST), (label_w + 1 + c * (size + 1), y))
    return write_png(path, canvas, prov)


# --------------------------------------------------------------------------- one generator


def measure(config, arch: str, recognizer, real_embeddings: np.ndarray, test_source, num_samples: int,
            batch_size: int, max_test: int, train: bool) -> dict:
    """Every number and figure of one generator; a failed encoder leaves the inversion fields None."""

    t0 = time.perf_counter()
    out = {"arch": arch, "errors": []}
    if train:
        train_generator(config, arch)
    G = make_generator(config.gan, arch)
    g_vars = load_generator(config, arch)
    lod = evaluation_lod(config, arch)
    generate = make_generate(G, arch, lod)

    step = make_embed_generated(generate, recognizer.embed, G.z_dim, batch_size)
    fake = generated_embeddings(step, g_vars, recognizer.variables, num_samples, batch_size, config.seed)
    out["frechet_distance"] = frechet_distance(fake, real_embeddings)
    out["kernel_distance"] = kernel_distance(fake, real_embeddings)
    out["samples"] = np.asarray(generate(g_vars, fixed_latents(G.z_dim, GRID_SAMPLES), jax.random.PRNGKey(0),
                                         "const"))
    out["params_G"] = count_params(g_vars["params"])
    out["params_D"] = discriminator_params(config, arch)
    out["lod"] = lod

    out.update(inversion_ssim=None, inversion_psnr=None, params_E=None, inversion=None)
    try:
        if train:
            train_encoder(config, arch)
        E, e_vars, inverted_g_vars = load_encoder(config, arch)
        scores = inversion_scores(make_reconstruct(G, E, arch, lod), e_vars,
                                  g_vars if inverted_g_vars is None else inverted_g_vars, test_source, batch_size,
                                  max_test)
        out.update(inversion_ssim=scores["ssim"], inversion_psnr=scores["psnr"], inversion=scores,
                   params_E=count_params(e_vars["params"]))
    except Exception as err:  # noqa: BLE001 - reported, and the other numbers of this arch are kept
        traceback.print_exc()
        out["errors"].append(f"encoder: {type(err).__name__}: {err}")
    out["wall_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- report


def _fmt(value, spec=".3f"):
    return None if value is None else format(value, spec)


def report(config, measured: dict, settings: dict) -> str:
    rows = []
    for arch in ARCHS:
        m = measured[arch]
        rows.append([DISPLAY[arch], _fmt(m.get("frechet_distance"), ".4f"), _fmt(m.get("kernel_distance"), ".4f"),
                     _fmt(m.get("inversion_ssim")), _fmt(m.get("inversion_psnr"), ".2f"),
                     _fmt(m.get("params_G"), ","), _fmt(m.get("params_D"), ","), _fmt(m.get("params_E"), ",")])
    s2 = measured["stylegan2"].get("inversion_ssim")
    at_small = config.preset == "small"
    met = "—" if s2 is None else ("yes" if s2 >= TARGET_SSIM else "no")
    verdict = met if at_small else f"{met} (informative only: the target is for `small`; this is `{config.preset}`)"
    errors = [f"* {DISPLAY[a]}: {e}" for a in ARCHS for e in measured[a].get("errors", [])]
    figures = "\n".join(
        f"| {DISPLAY[a]} | ![samples](samples_{a}.png) | "
        + (f"![inversion](inversion_{a}.png) |" if measured[a].get("inversion") else "— |")
        for a in ARCHS if measured[a].get("samples") is not None)
    rec = settings["recognizer"]
    few_real_note = (f" With fewer real faces ({settings['num_real']}) than twice the embedding size, the real"
                     " covariance is poorly estimated: here the value checks the pipeline rather than measuring quality."
                     if settings["num_real"] < 2 * rec["embed_dim"] else "")
    gan, enc = config.gan, config.encoder
    return f"""# Generators and latent encoders (issue 5)

docs/method.md §1 components 3 (latent encoder) and 4 (face generator). Produced by
`python -m jaxdeid.reproduce.generators --preset {config.preset}`. The paper prints no such numbers; these measure
our re-implementation only.

{markdown_table(["generator", "Fréchet distance ↓", "KID ↓", "inversion SSIM ↑", "inversion PSNR (dB) ↑",
                 "params G", "params D", "params E"], rows)}

* **Preset `{config.preset}`**, SynthFaces at {config.data.resolution} px. Generators: {gan.train.steps} steps of batch
  {gan.train.batch_size} each (`gan.train.steps`); encoders: {enc.train.steps} steps of batch {enc.train.batch_size}
  (`encoder.train.steps`).
* **Fréchet distance / KID**: N = **{settings['num_generated']}** generated faces (EMA generator, truncation ψ = 1,
  random noise inputs) against **{settings['num_real']}** real faces of the `{settings['real_split']}` split, both
  embedded by the {rec['arch']} recognizer (step {rec['step']}{', trained by this run' if rec['trained_here'] else ''})
  into its L2-normalised {rec['embed_dim']}-d embedding. d² = ‖μ₁−μ₂‖² + Tr(Σ₁+Σ₂−2(Σ₁Σ₂)^{{1/2}})
  (`jaxdeid/metrics/frechet.py`). Biased upwards at small N and measured in a face-identity space, not
  Inception's: compare rows with each other, not with published FIDs.{few_real_note}
* **Inversion**: SSIM / PSNR of G(E(x)) (constant noise inputs) against x, mean over
  {settings['num_inverted']} `test` faces.
* **params**: trainable parameters (buffers excluded); `params` in the JSON is G's.

## Done-when check (issue 5)

{markdown_table(["criterion", "needed", "measured", "met"],
                [["StyleGAN2 encoder inversion SSIM at small", f">= {TARGET_SSIM}", _fmt(s2), verdict]])}

StyleGAN2 samples must "look like varied SynthFaces": see `samples_stylegan2.png` below (judged by eye).
{chr(10).join(["", "## Failures", "", *errors]) if errors else ""}

## Figures

| generator | 16 samples (fixed z) | test faces (top) / G(E(x)) (bottom) |
|---|---|---|
{figures}
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_flags(parser)
    parser.add_argument("--num-samples", type=int, default=None,
                        help="generated faces for the Fréchet distance (default: smoke 64, small 2000, paper 10000)")
    parser.add_argument("--recognizer", default="resnet50", help="recognizer whose embeddings the distances use")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per jitted generation / inversion batch (default recognizer.eval_batch_size)")
    parser.add_argument("--max-test", type=int, default=0, help="test faces to invert / compare (0 = all)")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated subset to (re)measure")
    parser.add_argument("--no-train", action="store_true", help="only evaluate existing checkpoints")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    start = time.perf_counter()
    archs = [a for a in ARCHS if a in args.archs.split(",")]
    num_samples = int(args.num_samples or DEFAULT_SAMPLES[config.preset])
    batch_size = int(args.batch_size or config.recognizer.eval_batch_size)


    recognizer, trained_here = load_or_train_recognizer(config, args.recognizer)
    test_source = get_source(config, "test")
    real_count = len(test_source) if args.max_test <= 0 else min(args.max_test, len(test_source))
    real = np.asarray(embed_source(recognizer.embed, recognizer.variables, test_source, np.arange(real_count),
                                   batch_size), np.float64)

    measured = {}
    for arch in ARCHS:
        if arch not in archs:
            measured[arch] = {"errors": ["not measured in this run (--archs)"]}
            continue
        action = "measuring existing checkpoints" if args.no_train else "training what is missing, then measuring"
        print(f"[generators] {arch}: {action}", flush=True)
        try:
            measured[arch] = measure(config, arch, recognizer, real, test_source, num_samples, batch_size,
                                     args.max_test, train=not args.no_train)
        except Exception as err:  # noqa: BLE001 - one failed arch must not hide the others
            traceback.print_exc()
            measured[arch] = {"errors": [f"{type(err).__name__}: {err}"]}

    settings = {
        "num_generated": num_samples, "num_real": int(real.shape[0]), "real_split": "test",
        "num_inverted": next((m["inversion"]["count"] for m in measured.values() if m.get("inversion")), 0),
        "features": "L2-normalised recognizer embedding",
        "recognizer": {"arch": args.recognizer, "step": recognizer.step, "trained_here": trained_here,
                       "embed_dim": int(real.shape[1])},
        "truncation_psi": 1.0, "batch_size": batch_size,
    }
    details = {a: {k: m.get(k) for k in ("kernel_distance", "params_G", "params_D", "params_E", "lod", "wall_s",
                                          "errors")} for a, m in measured.items()}
    prov = provenance(config.preset, config.seed, time.perf_counter() - start, settings=settings, details=details)
    payload = {a: {"frechet_distance": measured[a].get("frechet_distance"),
                   "inversion_ssim": measured[a].get("inversion_ssim"),
                   "inversion_psnr": measured[a].get("inversion_psnr"),
                   "params": measured[a].get("params_G")} for a in ARCHS}
    payload["provenance"] = prov

    results = Path(config.results_dir)
    for arch in ARCHS:
        m = measured[arch]
        if m.get("samples") is not None:
            half = GRID_SAMPLES // 2
            save_figure(results / f"samples_{arch}.png",
                        [("", m["samples"][:half]), ("", m["samples"][half:])], {**prov, "arch": arch})
        if m.get("inversion"):
            save_figure(results / f"inversion_{arch}.png",
                        [("test face x", m["inversion"]["real"]), ("G(E(x))", m["inversion"]["reconstructed"])],
                        {**prov, "arch": arch})
    write_json(results / "generators.json", payload)
    write_markdown(results / "generators.md", report(config, measured, settings), prov)
    print(json.dumps({a: payload[a] for a in ARCHS}, indent=2))

    complete = [a for a in ARCHS if payload[a]["frechet_distance"] is not None and payload[a]["inversion_ssim"]
                is not None]
    if len(complete) == len(ARCHS):
        return EXIT_OK
    measured_any = any(payload[a]["frechet_distance"] is not None for a in ARCHS)
    return EXIT_PARTIAL if measured_any else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
