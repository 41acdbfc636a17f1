"""Smoke test of jaxdeid/reproduce/generators.py's measuring plumbing (no training).

A freshly initialised 16 px StyleGAN2 stands in for a trained one, a pixel-statistics function for
the recognizer and a constant map for the encoder; the full script (which trains) is run end to end by the lead.
"""

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.gan import init_generator, make_generator
from jaxdeid.metrics import psnr, ssim

pytestmark = pytest.mark.slow  # compiles a (16 px) synthesis network three times: ~20-40 s on 2 free cores


def _load_script():
    return importlib.import_module("jaxdeid.reproduce.generators")


@jax.jit
def _pixel_embed(variables, images):
    """Recognizer stand-in with the ``embed(variables, images)`` interface: channel means of a 2x2 grid."""
    del variables
    b, h, w, c = images.shape
    return images.reshape(b, 2, h // 2, 2, w // 2, c).mean(axis=(2, 4)).reshape(b, -1)


class _ConstantEncoder(nn.Module):
    """Encoder stand-in: a learned-free map x -> a fixed latent (the generator's own w_avg)."""

    latents: jax.Array

    def __call__(self, x):
        return jnp.broadcast_to(self.latents, (x.shape[0],) + self.latents.shape)


class _ArraySource:
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def get(self, indices):
        return {"image": self.images[np.asarray(indices)]}


@pytest.fixture(scope="module")
def setup():
    script = _load_script()
    # Smaller than smoke (16 px, 8 channels) so that compiling the synthesis network stays cheap.
    config = get_config("smoke", ["gan.img_resolution=16", "gan.channel_base=128", "gan.channel_max=8",
                                  "gan.z_dim=8", "gan.w_dim=8", "gan.num_layers=1", "data.resolution=16"])
    G = make_generator(config.gan, "stylegan2")
    g_vars = jax.jit(lambda key: init_generator(G, key))(jax.random.PRNGKey(0))
    return script, config, G, g_vars


def test_generated_embeddings_shape_and_determinism(setup):
    script, config, G, g_vars = setup
    generate = script.make_generate(G, "stylegan2", 0.0)
    step = script.make_embed_generated(generate, _pixel_embed, G.z_dim, batch_size=2)
    # 5 samples in batches of 2: the last batch is cut, so exactly 5 rows come back.
    a = script.generated_embeddings(step, g_vars, {}, 5, 2, seed=0)
    b = script.generated_embeddings(step, g_vars, {}, 5, 2, seed=0)
    c = script.generated_embeddings(step, g_vars, {}, 5, 2, seed=1)
    assert a.shape == (5, 12) and a.dtype == np.float64
    np.testing.assert_array_equal(a[:2], script.generated_embeddings(step, g_vars, {}, 2, 2, seed=0))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all((a >= 0) & (a <= 1))  # clipped images in [0, 1]


def test_inversion_scores_pad_and_average_exactly(setup):
    script, config, G, g_vars = setup
    from jaxdeid.gan import average_latent

    E = _ConstantEncoder(latents=average_latent(G, g_vars))
    reconstruct = script.make_reconstruct(G, E, "stylegan2", 0.0)
    images = np.random.default_rng(0).uniform(0, 1, (5, 16, 16, 3)).astype(np.float32)
    scores = script.inversion_scores(reconstruct, {}, g_vars, _ArraySource(images), batch_size=2, max_images=0)

    # Reference: the same reconstruction for all 5 faces in one unpadded batch.
    recon, _, _ = reconstruct({}, g_vars, images)  # one unpadded batch of 5 (a second compiled shape)
    recon = np.asarray(recon)
    assert scores["count"] == 5
    assert scores["ssim"] == pytest.approx(float(np.mean(ssim(recon, images))), abs=1e-5)
    assert scores["psnr"] == pytest.approx(float(np.mean(psnr(recon, images))), abs=1e-4)
    assert scores["real"].shape == (2, 16, 16, 3) and scores["reconstructed"].shape == (2, 16, 16, 3)


def test_parameter_counts(setup):
    script, config, G, g_vars = setup
    assert script.count_params(g_vars["params"]) > 0
    assert script.discriminator_params(config, "stylegan2") > 0
    assert script.evaluation_lod(config, "stylegan2") == 0.0
