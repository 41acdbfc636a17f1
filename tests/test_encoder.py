"""Latent code generation network (component 3): SE-ResNet50 + six FC layers, trained with eq. (5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.encoder import make_encoder
from jaxdeid.encoder.train import load_trained, make_task
from jaxdeid.gan import average_latent, init_generator, make_generator
from jaxdeid.train import run

STEPS = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few smoke steps (32 px, batch 2) against a randomly initialised smoke StyleGAN2."""
    workdir = tmp_path_factory.mktemp("encoder")
    config = get_config("smoke", [f"encoder.train.steps={STEPS}", "encoder.train.batch_size=2",
                                  "encoder.train.log_every=1", f"encoder.train.ckpt_every={STEPS}",
                                  f"encoder.train.eval_every={STEPS}", "encoder.train.lr=1e-3",
                                  "encoder.train.warmup_steps=1", "encoder.eval_images=2"])
    config.workdir = str(workdir)
    G = make_generator(config.gan, "stylegan2")
    g_vars = jax.jit(lambda key: init_generator(G, key))(jax.random.PRNGKey(3))
    # w_avg of an untrained mapping network is its zero initial value; give it the real mean of w.
    z = jax.random.normal(jax.random.PRNGKey(4), (256, G.z_dim))
    w_mean = jnp.mean(G.apply(g_vars, z, method="map")[:, 0], axis=0)
    g_vars = {**g_vars, "buffers": {**g_vars["buffers"], "mapping": {**g_vars["buffers"]["mapping"], "w_avg": w_mean}}}
    _, records = run(make_task(config, "stylegan2", g_vars), config.encoder.train, workdir, seed=0)
    return config, G, g_vars, records


@pytest.mark.slow  # SE-ResNet50 + generator: initialising and compiling the step take ~1-2 min of CPU
def test_encoder_output_shapes_and_six_fc_layers(trained):
    config, G, g_vars, _ = trained
    encoder, variables, generator_variables = load_trained(config, "stylegan2", with_generator=True)
    faces = jax.random.uniform(jax.random.PRNGKey(0), (2, config.data.resolution, config.data.resolution, 3))
    latents = jax.jit(encoder.apply)(variables, faces)
    assert latents.shape == (2, G.num_ws, G.latent_dim)
    assert np.all(np.isfinite(np.asarray(latents)))
    # The paper's mapping network: exactly six fully connected layers after the SE-ResNet50 backbone.
    mapping = variables["params"]["mapping"]
    assert sorted(mapping) == [f"fc{i}" for i in range(6)]
    assert all(set(layer) == {"kernel", "bias"} for layer in mapping.values())
    assert mapping["fc5"]["kernel"].shape[1] == G.num_ws * G.latent_dim      # W+
    backbone = variables["params"]["backbone"]
    blocks = [name for name in backbone if name.startswith("stage")]
    assert len(blocks) == 3 + 4 + 6 + 3 and all("se" in backbone[b] for b in blocks)
    # The encoder carries the generator's w_avg it started from, and the generator it inverts.
    np.testing.assert_allclose(variables["latent_avg"]["w_avg"], average_latent(G, g_vars), atol=1e-6)
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(generator_variables)[0],
                                  jax.tree_util.tree_leaves(g_vars)[0])
    images = jax.jit(lambda g, w: G.apply(g, w, method="synthesize", noise_mode="const"))(generator_variables, latents)
    assert images.shape == faces.shape


def test_w_encoder_broadcasts_one_latent():
    config = get_config("smoke", ["encoder.w_plus=False"])
    encoder = make_encoder(config, "stylegan2")
    shapes = jax.eval_shape(lambda k: encoder.init_with_output(k, jnp.zeros((2, 32, 32, 3))), jax.random.PRNGKey(0))
    latents, variables = shapes
    assert latents.shape == (2, encoder.num_ws, encoder.latent_dim)
    assert variables["params"]["mapping"]["fc5"]["kernel"].shape[1] == encoder.latent_dim


@pytest.mark.slow
def test_smoke_steps_lower_reconstruction_loss(trained):
    _, _, _, records = trained
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    evals = [r for r in records if "eval/ssim" in r]
    assert len(evals) == 1 and np.isfinite(evals[0]["eval/psnr"])


def test_load_trained_without_checkpoint_says_what_to_run(tmp_path):
    config = get_config("smoke")
    config.workdir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="jaxdeid train encoder --arch pggan"):
        load_trained(config, "pggan")
