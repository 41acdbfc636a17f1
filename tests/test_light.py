"""Light enhancement / attenuation networks (components 1 and 6): shapes, loss, training, resumption, CLI."""

import dataclasses

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxdeid.configs import get_config
from jaxdeid.light import light_loss, load_trained, make_model, make_task, mean_luminance
from jaxdeid.light.train import darken_each, pair_keys
from jaxdeid.train import run

STEPS = 8


def _config(workdir=None, steps=STEPS):
    config = get_config("smoke", [f"light.train.steps={steps}", "light.train.log_every=1",
                                  "light.train.ckpt_every=4", f"light.train.eval_every={steps}"])
    if workdir is not None:
        config.workdir = str(workdir)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke enhancer trained STEPS steps straight through, with its records and its initial eval loss."""
    config = _config(tmp_path_factory.mktemp("light_runs"))
    task = make_task(config, "enhance")
    initial_eval = task.eval_fn(task.init(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x1A1D)))["loss"]
    _, records = run(task, config.light.train, config.workdir, seed=config.seed)
    return config, records, initial_eval


def test_output_and_components_shapes_and_ranges():
    config = get_config("smoke")
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 24, 3))
    model = make_model(config, "enhance")
    # Eager init at the training shape (its compiled pieces are reused by the training tests), jitted apply.
    variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))
    out = jax.jit(lambda v, x: model.apply(v, x, with_components=True))(variables, images)
    assert out["output"].shape == images.shape
    assert out["reflectance"].shape == out["adjusted_reflectance"].shape == images.shape
    assert out["illumination"].shape == out["adjusted_illumination"].shape == (2, 32, 24, 1)
    for value in out.values():
        assert float(value.min()) >= 0.0 and float(value.max()) <= 1.0
    # recomposition: output = R' * L'
    np.testing.assert_allclose(out["output"], out["adjusted_reflectance"] * out["adjusted_illumination"], atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(model.init, jax.random.PRNGKey(1), images[:, :30])


def test_attenuator_takes_the_target_level():
    config = get_config("smoke")
    model = make_model(config, "attenuate")
    assert model.level_input
    images = jnp.full((2, 16, 16, 3), 0.5)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros(1))
    apply = jax.jit(model.apply)
    dark, bright = apply(variables, images, jnp.zeros(2)), apply(variables, images, jnp.ones(2))
    assert not np.allclose(dark, bright)  # the level channel reaches the output
    with pytest.raises(ValueError, match="level"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), images)


def test_loss_equals_eqs_2_to_4_on_a_hand_case():
    # Constant images: SSIM reduces to its luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a, b = jnp.full((1, 16, 16, 3), 0.2), jnp.full((1, 16, 16, 3), 0.4)
    c1 = (0.01 * 1.0) ** 2
    ssim = (2 * 0.2 * 0.4 + c1) / (0.2 ** 2 + 0.4 ** 2 + c1)
    expected = 1.0 * (0.2 ** 2) + 0.5 * 0.5 * (1.0 - ssim)
    loss, terms = light_loss(a, b, 1.0, 0.5)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(terms["mse"]), 0.04, rtol=1e-5)
    assert float(light_loss(b, b)[0]) == pytest.approx(0.0, abs=1e-6)


def test_evaluation_pairs_are_deterministic_and_twin_is_noise_free():
    config = get_config("smoke")
    normal = jax.random.uniform(jax.random.PRNGKey(3), (3, 16, 16, 3), minval=0.1, maxval=0.9)
    keys = pair_keys(0, 1, np.arange(3))
    low, clean = darken_each(keys, normal, config.lowlight)
    low_again, _ = darken_each(keys, normal, config.lowlight)
    np.testing.assert_array_equal(low, low_again)
    # The twin is normal ** gamma with one gamma per image in [gamma_min, gamma_max].
    gamma = np.log(np.asarray(clean)) / np.log(np.asarray(normal))
    assert np.allclose(gamma, gamma[:, :1, :1, :1], rtol=1e-3)
    assert config.lowlight.gamma_min - 1e-4 <= gamma.min() and gamma.max() <= config.lowlight.gamma_max + 1e-4
    assert float(jnp.abs(low - clean).mean()) > 1e-3  # the noisy image really is noisy
    assert mean_luminance(low).shape == (3,)


def test_training_lowers_the_loss(trained):
    config, records, initial_eval = trained
    losses = [r["loss"] for r in records if "loss" in r]
    final_eval = [r["eval/loss"] for r in records if "eval/loss" in r][-1]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert final_eval < initial_eval  # same fixed val pairs before and after training


def test_resumption_reproduces_uninterrupted_losses(trained, tmp_path):
    config, straight, _ = trained
    resumed_cfg = _config(tmp_path)
    task = dataclasses.replace(make_task(resumed_cfg, "enhance"), eval_fn=None)  # eval does not touch the losses
    _, first = run(task, resumed_cfg.light.train, tmp_path, steps=STEPS // 2)            # "killed" half-way
    _, rest = run(dataclasses.replace(make_task(resumed_cfg, "enhance"), eval_fn=None),
                  resumed_cfg.light.train, tmp_path)                                    # restarted
    resumed = [r["loss"] for r in first + rest if "loss" in r]
    np.testing.assert_allclose(resumed, [r["loss"] for r in straight if "loss" in r], rtol=1e-6, atol=0)


def test_load_trained(trained, tmp_path):
    config, _, _ = trained
    model, variables = load_trained(config, "enhance")
    assert model.apply(variables, jnp.zeros((1, 32, 32, 3))).shape == (1, 32, 32, 3)
    with pytest.raises(FileNotFoundError, match="jaxdeid train attenuate"):
        load_trained(_config(tmp_path), "attenuate")


def test_enhance_command_writes_good_files_and_reports_bad_ones(trained, tmp_path, capsys):
    from PIL import Image

    from jaxdeid.cli import main

    config, _, _ = trained
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 60, (40, 36, 3), dtype=np.uint8)).save(src / "dark.png")   # not a multiple of 8
    Image.fromarray(rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)).save(src / "sub" / "b.jpg")
    (src / "broken.png").write_text("this is not an image")
    status = main(["enhance", str(src), str(out), "--preset", "smoke", "--workdir", config.workdir])
    assert status == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["dark.png", "sub/b.png"]
    assert Image.open(out / "dark.png").size == (36, 40)
    assert "broken.png" in capsys.readouterr().err
