"""LLNet low-light synthesis: determinism, range, darkness, parameter bounds, numpy twin."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.data.lowlight import darken, darken_np


def _images(shape=(4, 16, 16, 3), seed=0):
    return np.random.default_rng(seed).uniform(0.2, 1.0, shape).astype(np.float32)


def _jitted(cfg, return_params=False):
    # Eager JAX compiles every primitive separately (slow on a busy CPU); one jit per test instead.
    return jax.jit(lambda key, x: darken(key, x, cfg, return_params=return_params))


def _noiseless():
    cfg = get_config("smoke").lowlight
    cfg.sigma_max = 0.0
    return cfg


def test_jax_is_deterministic_jittable_and_in_range():
    cfg = get_config("smoke").lowlight
    x = _images()
    key = jax.random.PRNGKey(3)
    fn = _jitted(cfg)
    y1 = fn(key, x)
    y2 = fn(key, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    y3 = fn(jax.random.PRNGKey(4), x)
    assert not np.allclose(np.asarray(y1), np.asarray(y3))
    assert y1.shape == x.shape and y1.dtype == jnp.float32
    assert float(y1.min()) >= 0.0 and float(y1.max()) <= 1.0


def test_faces_become_much_darker():
    from jaxdeid.data.synthfaces import render_faces

    cfg = get_config("smoke").lowlight
    x = render_faces(np.arange(8), np.zeros(8, int), 24).astype(np.float32) / 255.0
    luminance = lambda im: (im @ np.array([0.299, 0.587, 0.114], np.float32)).reshape(len(im), -1).mean(1)
    for y in (np.asarray(_jitted(cfg)(jax.random.PRNGKey(0), x)), darken_np(np.random.default_rng(0), x, cfg)):
        assert luminance(y).mean() < 0.4 * luminance(x).mean()
        assert np.all(luminance(y) < 0.75 * luminance(x))


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_gamma_recovered_from_a_constant_image_lies_in_the_bounds(backend):
    cfg = _noiseless()
    level = 0.6
    x = np.full((2, 5, 8, 8, 3), level, np.float32)         # two batch axes: one gamma per image
    if backend == "jax":
        y, gamma, sigma = _jitted(cfg, return_params=True)(jax.random.PRNGKey(1), x)
        y, gamma, sigma = map(np.asarray, (y, gamma, sigma))
    else:
        y, gamma, sigma = darken_np(np.random.default_rng(1), x, cfg, return_params=True)
    assert gamma.shape == (2, 5) and sigma.shape == (2, 5)
    np.testing.assert_array_equal(sigma, 0.0)
    # Every pixel of one image shares its gamma, and different images get different gammas.
    assert np.all(y.reshape(10, -1).std(1) < 1e-6)
    recovered = np.log(y[..., 0, 0, 0]) / np.log(level)
    np.testing.assert_allclose(recovered, gamma, rtol=1e-4)
    assert np.all(recovered >= cfg.gamma_min - 1e-4) and np.all(recovered <= cfg.gamma_max + 1e-4)
    assert recovered.std() > 0.2


def test_noise_follows_sigma_sqrt_b():
    cfg = get_config("smoke").lowlight
    x = np.full((64, 32, 32, 3), 0.8, np.float32)           # 0.8**gamma >= 0.33: no clipping at 0 or 1
    y, gamma, sigma = darken_np(np.random.default_rng(2), x, cfg, return_params=True)
    assert np.all(sigma >= 0) and np.all(sigma <= cfg.sigma_max + 1e-7)
    measured = (y - (0.8 ** gamma)[:, None, None, None]).reshape(64, -1).std(1)
    np.testing.assert_allclose(measured, sigma, atol=0.006)
    # B ~ U(0, 1) so sigma^2 / sigma_max^2 is uniform: mean 1/2.
    assert 0.35 < np.mean((sigma / cfg.sigma_max) ** 2) < 0.65


def test_numpy_twin_matches_distribution_and_determinism():
    cfg = get_config("smoke").lowlight
    x = _images()
    a = darken_np(np.random.default_rng(5), x, cfg)
    b = darken_np(np.random.default_rng(5), x, cfg)
    assert a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_bad_config_and_shapes_are_rejected():
    bad = ml_collections.ConfigDict({"gamma_min": 5.0, "gamma_max": 2.0, "sigma_max": 0.1})
    with pytest.raises(ValueError):
        darken_np(np.random.default_rng(0), _images(), bad)
    with pytest.raises(ValueError):
        darken(jax.random.PRNGKey(0), jnp.zeros((4, 4)), get_config("smoke").lowlight)
