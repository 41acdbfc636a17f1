"""Generators and discriminators (StyleGAN2, StyleGAN1, PGGAN): shapes, the shared API, modulation,
R1, progressive growing helpers and a few real training steps through the shared loop."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.gan import ARCHS, average_latent, init_generator, make_discriminator, make_generator
from jaxdeid.gan.losses import (discriminator_loss, generator_loss, paper_eq6_discriminator_loss,
                                paper_eq6_generator_loss, r1_penalty)
from jaxdeid.gan.layers import minibatch_stddev
from jaxdeid.gan.pggan import images_at_lod, lod_schedule
from jaxdeid.gan.stylegan2 import modulated_conv2d, modulated_conv2d_reference

B = 4


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke")


@pytest.fixture(scope="module")
def built(cfg):
    """For every arch: G, D, their variables and one pass through the shared API, all in ONE jitted
    function per arch (each separate jit or eager op costs an XLA compile)."""
    out = {}
    for arch in ARCHS:
        G, D = make_generator(cfg.gan, arch), make_discriminator(cfg.gan, arch)

        def probe(key, G=G, D=D, arch=arch):
            k_g, k_d, k_z, k_n = jax.random.split(key, 4)
            g_vars = init_generator(G, k_g)
            z = jax.random.normal(k_z, (B, G.z_dim))
            ws = G.apply(g_vars, z, method="map")
            images = G.apply(g_vars, ws, method="synthesize", noise_mode="random", rngs={"noise": k_n})
            d_vars = D.init(k_d, images)
            return {"g_vars": g_vars, "d_vars": d_vars, "ws": ws, "images": images,
                    "logits": D.apply(d_vars, images),
                    "truncated": G.apply(g_vars, z, method="map", truncation_psi=0.0),
                    "w_avg": average_latent(G, g_vars),
                    # R1 (a double backward) of every discriminator.
                    "r1": r1_penalty(lambda im: D.apply(d_vars, im), images)}

        out[arch] = (G, D, jax.jit(probe)(jax.random.PRNGKey(0)))
    return out


def _with_noise_strength(params, value):
    """Sets every noise strength (init 0) so that the noise inputs actually change the image."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, value) if "noise_strength" in jax.tree_util.keystr(path) else x, params)


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_shared_api(built, arch):
    G, _, out = built[arch]
    expected_ws, expected_dim = {"stylegan2": (8, 32), "stylegan1": (8, 32), "pggan": (1, 32)}[arch]
    assert (G.num_ws, G.latent_dim) == (expected_ws, expected_dim)
    assert set(out["g_vars"]) == {"params", "buffers"}
    assert out["ws"].shape == (B, G.num_ws, G.latent_dim)
    images = out["images"]
    assert images.shape == (B, 32, 32, 3) and images.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(images)))
    assert float(images.std(axis=0).mean()) > 1e-3          # different z give different images
    assert out["logits"].shape == (B,) and bool(jnp.all(jnp.isfinite(out["logits"])))
    # Truncation psi = 0 collapses every latent onto w_avg, the encoders' starting point.
    assert out["w_avg"].shape == (G.num_ws, G.latent_dim)
    np.testing.assert_allclose(out["truncated"], jnp.broadcast_to(out["w_avg"], out["truncated"].shape), atol=1e-6)
    # The R1 gradient penalty of every discriminator is non-zero.
    assert np.isfinite(float(out["r1"])) and float(out["r1"]) > 1e-6


@pytest.mark.parametrize("arch", ["stylegan2", "stylegan1"])
def test_const_noise_is_deterministic_and_random_noise_is_not(built, arch):
    G, _, out = built[arch]
    g_vars = {**out["g_vars"], "params": _with_noise_strength(out["g_vars"]["params"], 0.5)}

    @jax.jit
    def all_modes(v, w):
        synth = lambda mode, k: G.apply(v, w, method="synthesize", noise_mode=mode, rngs={"noise": k})
        k1, k2 = jax.random.PRNGKey(5), jax.random.PRNGKey(6)
        return (synth("const", k1), synth("const", k2), synth("random", k1), synth("random", k2),
                synth("none", k1))

    ws = jax.random.normal(jax.random.PRNGKey(4), (2, G.num_ws, G.latent_dim))
    const_a, const_b, random_a, random_b, none = all_modes(g_vars, ws)
    np.testing.assert_array_equal(const_a, const_b)
    assert float(jnp.abs(random_a - random_b).max()) > 1e-3
    assert float(jnp.abs(const_a - none).max()) > 1e-3
    # ... and repeated calls with the stored buffers give bit-identical images.
    np.testing.assert_array_equal(all_modes(g_vars, ws)[0], const_a)


def test_modulation_demodulation_keeps_unit_variance():
    """StyleGAN2 §2.2: with unit-variance inputs, demodulated outputs have unit std for any weights/styles."""

    @jax.jit
    def trial(key, weight_scale):
        kx, kw, ks = jax.random.split(key, 3)
        x = jax.random.normal(kx, (4, 12, 12, 64))
        weight = jax.random.normal(kw, (3, 3, 64, 48)) * weight_scale      # arbitrary scale
        styles = jnp.exp(jax.random.normal(ks, (4, 64)))                  # arbitrary positive styles
        fast = {(demod, up): modulated_conv2d(x, weight, styles, demod, up)
                for demod in (False, True) for up in (False, True)}
        reference = {(demod, up): modulated_conv2d_reference(x, weight, styles, demod, up)
                     for demod in (False, True) for up in (False, True)}
        return fast, reference

    for t in range(5):
        fast, reference = trial(jax.random.PRNGKey(10 + t), 0.2 + t)
        y = fast[True, False][:, 1:-1, 1:-1]                     # interior: no zero padding
        assert abs(float(y.std()) - 1.0) < 0.08, (t, float(y.std()))
        plain = fast[False, False][:, 1:-1, 1:-1]
        assert abs(float(plain.std()) - 1.0) > 0.5               # the property is demodulation's
        # The fast (non-fused) form equals convolving with per-sample modulated, demodulated weights.
        for k in fast:
            scale = float(jnp.abs(reference[k]).max())
            np.testing.assert_allclose(fast[k], reference[k], rtol=1e-4, atol=1e-4 * scale)


def test_r1_penalty_matches_finite_differences():
    """R1 = E‖∇_{x'} D‖² w.r.t. centred images x' = 2x − 1, checked against central differences."""
    w = jax.random.normal(jax.random.PRNGKey(20), (4 * 4 * 3, 5))

    def tiny_d(images):                          # a small nonlinear D: [B,4,4,3] in [0,1] → [B]
        return jnp.sum(jax.nn.softplus(images.reshape(images.shape[0], -1) @ w), axis=-1)

    reals = jax.random.uniform(jax.random.PRNGKey(21), (2, 4, 4, 3))
    centred = np.asarray(reals * 2 - 1, np.float64)
    eps = 1e-2
    # Every ±eps perturbation of every pixel, evaluated in one batched call.
    n = centred[0].size
    bumps = np.eye(n).reshape(n, 4, 4, 3) * eps
    probes = np.concatenate([centred[:, None] + bumps[None], centred[:, None] - bumps[None]], axis=1)
    values = np.asarray(jax.jit(tiny_d)(jnp.asarray((probes.reshape(-1, 4, 4, 3) + 1) / 2, jnp.float32)),
                        np.float64).reshape(2, 2 * n)
    fd = (values[:, :n] - values[:, n:]) / (2 * eps)
    expected = np.mean(np.sum(fd ** 2, axis=1))
    got = float(jax.jit(lambda x: r1_penalty(tiny_d, x))(reals))
    assert got > 0
    np.testing.assert_allclose(got, expected, rtol=2e-3)


def test_losses_and_paper_eq6_forms():
    real, fake = jnp.array([2.0, 1.0]), jnp.array([-1.0, 0.5])
    sp = jax.nn.softplus
    np.testing.assert_allclose(generator_loss(fake), jnp.mean(sp(-fake)), rtol=1e-6)
    np.testing.assert_allclose(discriminator_loss(real, fake), jnp.mean(sp(fake)) + jnp.mean(sp(-real)), rtol=1e-6)
    np.testing.assert_allclose(paper_eq6_generator_loss(fake), -jnp.mean(sp(fake)), rtol=1e-6)
    np.testing.assert_allclose(paper_eq6_discriminator_loss(real, fake, r1=2.0, r1_gamma=10.0),
                               discriminator_loss(real, fake) + 10.0, rtol=1e-6)
    # Both G losses push D(G(z)) up: their gradients w.r.t. the fake logits are negative.
    assert bool(jnp.all(jax.grad(generator_loss)(fake) < 0))
    assert bool(jnp.all(jax.grad(paper_eq6_generator_loss)(fake) < 0))


def test_minibatch_stddev_feature():
    same = jnp.ones((4, 4, 4, 8))
    varied = jax.random.normal(jax.random.PRNGKey(23), (4, 4, 4, 8))
    out_same, out_varied = jax.jit(lambda a, b: (minibatch_stddev(a, 4), minibatch_stddev(b, 2)))(same, varied)
    assert out_same.shape == (4, 4, 4, 9) and float(out_same[..., -1].max()) < 1e-3   # identical samples: ~0
    assert float(out_varied[..., -1].min()) > 0.3
    np.testing.assert_array_equal(out_varied[..., :8], varied)


def test_pggan_level_of_detail():
    images = jax.random.uniform(jax.random.PRNGKey(24), (2, 32, 32, 3))
    at = jax.jit(images_at_lod)
    np.testing.assert_allclose(at(images, 0.0), images, atol=1e-6)
    coarse = at(images, 3.0)                                    # 4×4 blocks of 8×8 pixels
    block_means = images[:, :8, :8].mean((1, 2), keepdims=True)
    np.testing.assert_allclose(coarse[:, :8, :8], jnp.broadcast_to(block_means, (2, 8, 8, 3)), atol=1e-5)
    np.testing.assert_allclose(at(images, 0.5), 0.5 * (images + at(images, 1.0)), atol=1e-5)
    lods = [float(lod_schedule(n, 32, 100, 100)) for n in (0, 99, 150, 200, 350, 1e6)]
    assert lods == [3.0, 3.0, 2.5, 2.0, 1.5, 0.0]


class _Faces:
    """A tiny in-memory real-image source (the data API's get() contract) with smooth random faces-like blobs."""

    def __init__(self, n=16, res=32, seed=0):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:res, 0:res] / res
        centres, colours = rng.uniform(0.3, 0.7, (n, 2)), rng.uniform(0.2, 0.9, (n, 3))
        blob = np.exp(-((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2) / 0.05)
        self.images = (blob[..., None] * colours[:, None, None, :]).astype(np.float32)

    def __len__(self):
        return len(self.images)

    def get(self, indices):
        return {"image": self.images[np.asarray(indices)], "label": np.zeros(len(indices), np.int32)}


@pytest.mark.slow   # each compiles a full G + D + R1 step: ~30-50 s per arch on 2 free cores (`-m slow`)
@pytest.mark.parametrize("arch", ARCHS)
def test_smoke_training_steps(tmp_path, arch):
    from jaxdeid.gan.train import load_trained, make_task
    from jaxdeid.train import run

    overrides = [f"gan.train.batch_size={B}", "gan.train.steps=3", "gan.train.log_every=1",
                 "gan.train.eval_every=3", "gan.train.ckpt_every=3", "gan.r1_interval=2",
                 f"workdir={str(tmp_path)!r}"]
    if arch == "pggan":
        overrides += ["gan.train_final_resolution=False", "gan.pggan_stable_images=0", "gan.pggan_fade_images=8"]
    config = get_config("smoke", overrides)
    task = make_task(config, arch, source=_Faces())
    init_state = task.init(jax.random.PRNGKey(0))
    task = dataclasses.replace(task, donate=False)                  # keep init_state's buffers alive
    state, records = run(task, config.gan.train, config.workdir, seed=0)

    losses = [r for r in records if "loss_G" in r]
    assert len(losses) == 3
    for r in losses:
        assert np.isfinite(r["loss_G"]) and np.isfinite(r["loss_D"])
    assert losses[0]["r1_term"] > 0 and losses[1]["r1_term"] == 0 and losses[2]["r1_term"] > 0   # lazy R1
    if arch == "pggan":
        assert [r["lod"] for r in losses] == [3.0, 2.5, 2.0]       # fading in 8×8 over 8 images
    changed = lambda a, b: max(float(jnp.abs(x - y).max()) for x, y in
                               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert changed(state["G"]["params"], init_state["G"]["params"]) > 0
    assert changed(state["D"]["params"], init_state["D"]["params"]) > 0
    assert changed(state["G_ema"]["params"], state["G"]["params"]) > 0            # EMA lags the raw G
    assert changed(state["G_ema"]["params"], init_state["G_ema"]["params"]) > 0   # ... but moves
    assert (tmp_path / f"gan_{arch}" / "samples_0000003.png").exists()
    evals = [r for r in records if "eval/sample_diversity" in r]
    assert evals and evals[-1]["eval/sample_diversity"] > 0
    if arch == "stylegan2":
        # The mapped-w average is tracked, and load_trained returns the EMA generator.
        assert float(jnp.abs(state["G"]["buffers"]["mapping"]["w_avg"]).max()) > 0
        ema = load_trained(config, arch)
        assert changed(ema["params"], state["G_ema"]["params"]) == 0
        logged = [json.loads(l) for l in (tmp_path / "gan_stylegan2" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in logged if "loss_G" in r] == [1, 2, 3]


def test_load_trained_without_checkpoint_says_what_to_run(tmp_path):
    from jaxdeid.gan.train import load_trained

    config = get_config("smoke", [f"workdir={str(tmp_path)!r}"])
    with pytest.raises(FileNotFoundError, match="jaxdeid train gan --arch stylegan1"):
        load_trained(config, "stylegan1")


def test_blur_equals_the_depthwise_filter():
    """`blur` (separable shifted sums) equals NVIDIA's [1,3,3,1]⊗[1,3,3,1]/64 depthwise convolution."""
    from jaxdeid.gan.layers import blur

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 5))
    taps = jnp.array([1.0, 3.0, 3.0, 1.0])
    kernel = jnp.tile((jnp.outer(taps, taps) / 64.0)[:, :, None, None], (1, 1, 1, 5))
    for pad in ((2, 1), (1, 1), (0, 0)):
        want = jax.lax.conv_general_dilated(x, kernel, (1, 1), (pad, pad), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=5, precision="highest")
        np.testing.assert_allclose(blur(x, pad), want, rtol=1e-5, atol=1e-6)


def test_blur_gradients_equal_autodiff_of_the_filter_to_second_order():
    """`blur`'s given gradient (the same blur, complementary padding) equals the autodiff of its slices.

    First order (every D step) and second order (the R1 penalty differentiates D's input
    gradient again), for the paddings D uses and an uneven frame.
    """
    from jaxdeid.gan.layers import _blur_padded, blur

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 8, 3))
    weights = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 8, 3))
    for pad in ((2, 1), (1, 1), (2, 2), (3, 2), (1, 0), (5, 0)):   # (5, 0): the transpose crops
        def first(f, x, pad=pad):
            return jax.grad(lambda x: jnp.sum(f(x * weights, pad) ** 3))(x)

        def second(f, x):
            return jax.grad(lambda x: jnp.sum(first(f, x) ** 2))(x)

        np.testing.assert_allclose(first(blur, x), first(_blur_padded, x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(second(blur, x), second(_blur_padded, x), rtol=1e-4, atol=1e-4)


def _transposed_conv_then_filter_numpy(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NVIDIA's conv2d_resample(up=2) for a 3×3 kernel with its default flip_weight=True (a
    correlation; its StyleGAN2 up layer passes False, i.e. the flipped kernel), written as
    loops: scatter every input pixel through the kernel onto the stride-2 grid, then the
    [1,3,3,1] filter with padding 1 and gain 4."""
    b, h, w, _ = x.shape
    full = np.zeros((b, 2 * h + 1, 2 * w + 1, kernel.shape[-1]))
    flipped = kernel[::-1, ::-1]
    for i in range(h):
        for j in range(w):
            full[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += np.einsum("bc,klcd->bkld", x[:, i, j], flipped)
    taps = np.array([1.0, 3.0, 3.0, 1.0]) / 4.0          # gain 2 per axis
    padded = np.pad(full, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = sum(t * padded[:, k:k + 2 * h] for k, t in enumerate(taps))
    return sum(t * rows[:, :, k:k + 2 * w] for k, t in enumerate(taps))


def test_upsampling_convolution_equals_the_transposed_convolution_and_filter():
    """The polyphase up-sampling convolution equals NVIDIA's operator (numpy loops), as does
    the direct lhs-dilated form; their gradients agree; and in the interior it equals the
    bilinear-then-3×3 form G used before (they differ only where the border is padded)."""
    from jaxdeid.gan.layers import conv2d, upsample_2x, upsample_conv2d, upsample_conv2d_reference

    x = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 7, 6))
    kernel = jax.random.normal(jax.random.PRNGKey(4), (3, 3, 6, 4))
    want = _transposed_conv_then_filter_numpy(np.asarray(x, np.float64), np.asarray(kernel, np.float64))
    fast = upsample_conv2d(x, kernel)
    assert fast.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(fast, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(upsample_conv2d_reference(x, kernel), want, rtol=1e-4, atol=1e-4)

    cotangent = jax.random.normal(jax.random.PRNGKey(5), fast.shape)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * cotangent), argnums=(0, 1))(x, kernel)
             for f in (upsample_conv2d, upsample_conv2d_reference)]
    for fast_grad, reference_grad in zip(*grads):
        np.testing.assert_allclose(fast_grad, reference_grad, rtol=1e-4, atol=1e-3)

    before = conv2d(upsample_2x(x), kernel)
    np.testing.assert_allclose(fast[:, 2:-2, 2:-2], before[:, 2:-2, 2:-2], rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(fast - before).max()) > 1e-2     # ... but they differ at the border


def test_fir_upsampling_equals_bilinear_in_the_interior():
    """NVIDIA's upsample2d (zero insertion + [1,3,3,1], gain 4) is bilinear ×2 away from the border."""
    from jaxdeid.gan.layers import upsample_2x, upsample_fir_2x

    x = jax.random.normal(jax.random.PRNGKey(6), (2, 6, 5, 3))
    fir, bilinear = upsample_fir_2x(x), upsample_2x(x)
    assert fir.shape == bilinear.shape == (2, 12, 10, 3)
    np.testing.assert_allclose(fir[:, 1:-1, 1:-1], bilinear[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    # A constant image stays constant except in the outer ring, where zero padding darkens it.
    ones = upsample_fir_2x(jnp.ones((1, 4, 4, 1)))
    np.testing.assert_allclose(ones[:, 1:-1, 1:-1], 1.0, rtol=1e-6)
    assert float(ones[0, 0, 0, 0]) < 1.0
