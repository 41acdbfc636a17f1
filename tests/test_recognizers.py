"""Face recognizers (issue 4): architectures, parameter counts, semi-hard mining, triplet training.

Cheap by design: parameter counts use `jax.eval_shape` (no real init), forward
checks fill the abstract variables with He-scaled random numbers (one jit of the
forward pass per arch, no jit of the deep init), and only VGG16 takes real steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdeid.configs import get_config
from jaxdeid.recognizers.model import ARCHS, backbone_param_count, make_recognizer
from jaxdeid.recognizers.triplet import cosine_distance_matrix, semi_hard_negatives, triplet_semihard_loss

# Canonical backbone sizes, classification heads aside (torchvision / Cadene's pretrainedmodels):
#   vgg16: 138,357,544 total - fc8 Linear(4096, 1000) 4,097,000
#   resnet50: 25,557,032 - fc Linear(2048, 1000) 2,049,000
#   se_resnet50: 28,088,024 - last_linear Linear(2048, 1000) 2,049,000
#   mobilenet_v3_large: 5,483,032 - classifier[3] Linear(1280, 1000) 1,281,000
CANONICAL_BACKBONE_PARAMS = {
    "vgg16": 138_357_544 - 4_097_000,
    "resnet50": 25_557_032 - 2_049_000,
    "senet50": 28_088_024 - 2_049_000,
    "mobilenetv3": 5_483_032 - 1_281_000,
}


def _abstract_variables(module, resolution):
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    return jax.eval_shape(lambda x: module.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
                                                x, train=False), x)


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_parameter_count_matches_canonical_architecture(arch):
    config = get_config("paper", ["data.resolution=224", "recognizer.width_mult=1.0"])
    module = make_recognizer(config, arch)
    variables = _abstract_variables(module, 224)
    count = backbone_param_count(module, variables["params"])
    expected = CANONICAL_BACKBONE_PARAMS[arch]
    assert abs(count - expected) / expected < 0.02, (arch, count, expected)
    # Running statistics are not parameters, and the head is exactly a linear embedding layer.
    head = variables["params"]["head"]
    assert set(head) == {"kernel", "bias"} and head["kernel"].shape[1] == config.recognizer.embed_dim


def _random_variables(abstract, seed=0):
    """He-scaled random kernels, unit BN scales, zero biases, identity running statistics."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape), jnp.float32)
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, jnp.float32)
        return jnp.zeros(leaf.shape, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, dict(abstract))


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_and_unit_norm_embeddings(arch):
    config = get_config("smoke")
    module = make_recognizer(config, arch)
    variables = _random_variables(_abstract_variables(module, 32))
    images = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3))
    embeddings = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, images))
    assert embeddings.shape == (4, config.recognizer.embed_dim)
    assert np.all(np.isfinite(embeddings))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.abs(embeddings[0] - embeddings[1]).max() > 1e-4  # different faces, different embeddings


def test_semi_hard_mining_picks_the_right_negatives():
    labels = jnp.array([0, 0, 1, 1, 2])
    d = np.zeros((5, 5), np.float32)
    def put(i, j, v):
        d[i, j] = d[j, i] = v
    put(0, 1, 0.3)                                   # anchor 0 / positive 1: d_ap = 0.3
    put(0, 2, 0.2); put(0, 3, 0.4); put(0, 4, 0.45)  # 2 is hard, 3 and 4 semi-hard, 3 the hardest of them
    put(1, 2, 0.6); put(1, 3, 0.9); put(1, 4, 0.7)   # anchor 1: all beyond the margin, closest is 2
    put(2, 3, 0.8)                                   # anchor 2 / positive 3: d_ap = 0.8
    put(2, 4, 0.5)                                   # anchor 2 negatives 0 (0.2), 1 (0.6), 4 (0.5): all hard
    put(3, 4, 0.3)                                   # anchor 3 negatives 0 (0.4), 1 (0.9), 4 (0.3): only 1 farther
    negative, pair_mask = semi_hard_negatives(jnp.asarray(d), labels)
    negative, pair_mask = np.asarray(negative), np.asarray(pair_mask)
    expected_pairs = np.zeros((5, 5), bool)
    expected_pairs[0, 1] = expected_pairs[1, 0] = expected_pairs[2, 3] = expected_pairs[3, 2] = True
    np.testing.assert_array_equal(pair_mask, expected_pairs)
    assert negative[0, 1] == 3   # hardest semi-hard negative
    assert negative[1, 0] == 2   # closest negative farther than the positive (loss 0 beyond the margin)
    assert negative[2, 3] == 1   # fallback: no negative farther than the positive -> the least hard one
    assert negative[3, 2] == 1   # the only negative farther than the positive


def _reference_triplet_loss(embeddings, labels, margin):
    """Loop-by-loop FaceNet semi-hard triplet loss, the reference for the vectorised one."""
    d = 1.0 - embeddings @ embeddings.T
    losses = []
    for a in range(len(labels)):
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a] or not negatives:
                continue
            farther = [n for n in negatives if d[a, n] > d[a, p]]
            n = min(farther, key=lambda n: d[a, n]) if farther else max(negatives, key=lambda n: d[a, n])
            losses.append(max(d[a, p] - d[a, n] + margin, 0.0))
    return float(np.mean(losses))


def test_triplet_loss_matches_reference():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(12, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), 3)
    loss, aux = triplet_semihard_loss(jnp.asarray(e), jnp.asarray(labels), 0.2)
    assert float(loss) == pytest.approx(_reference_triplet_loss(e.astype(np.float64), labels, 0.2), abs=1e-5)
    assert 0.0 <= float(aux["active_fraction"]) <= 1.0
    np.testing.assert_allclose(np.diag(np.asarray(cosine_distance_matrix(jnp.asarray(e)))), 0.0, atol=1e-6)


def test_triplet_training_steps_lower_the_loss():
    from jaxdeid.recognizers.train import make_task

    config = get_config("smoke", ["recognizer.train.lr=0.003", "recognizer.train.warmup_steps=1",
                                  "recognizer.flip=False"])
    task = make_task(config, "vgg16")
    batch = task.batch_fn(0)
    assert batch["image"].shape == (16, 32, 32, 3)
    state = task.init(jax.random.PRNGKey(0))
    step = jax.jit(task.train_step)
    losses = []
    for i in range(8):  # the same P x K batch: the loss must fall as the embedding fits it
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
    # BatchNorm running statistics live in the state and are updated by training.
    assert jax.tree_util.tree_leaves(state["batch_stats"])


def test_load_trained_without_checkpoint_says_what_to_run(tmp_path):
    from jaxdeid.recognizers.train import load_trained

    config = get_config("smoke")
    config.workdir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="jaxdeid train recognizer --arch resnet50"):
        load_trained(config, "resnet50")


def test_depthwise_convolution_equals_the_grouped_convolution():
    """MobileNetV3's depthwise layer (weighted strided slices) equals XLA's grouped convolution,
    in values and in gradients, for the kernel sizes and strides of its block table, and keeps
    nn.Conv's parameter (name, shape, initialiser scale)."""
    import flax.linen as nn

    from jaxdeid.recognizers.layers import DepthwiseConv, depthwise_conv2d

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 6))
    weights = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 8, 6))
    for k in (3, 5):
        kernel = jax.random.normal(jax.random.PRNGKey(k), (k, k, 1, 6))
        for stride in (1, 2):
            def grouped(x, kernel, k=k, stride=stride):
                return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(k // 2, k // 2)] * 2,
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                    feature_group_count=6, precision="highest")

            def loss(conv, x, kernel, stride=stride):
                y = conv(x, kernel, stride) if conv is depthwise_conv2d else conv(x, kernel)
                return jnp.sum(jnp.tanh(y) * weights[:, :y.shape[1], :y.shape[2]])

            np.testing.assert_allclose(depthwise_conv2d(x, kernel, stride), grouped(x, kernel), rtol=1e-5, atol=1e-5)
            for fast, want in zip(jax.grad(loss, argnums=(1, 2))(depthwise_conv2d, x, kernel),
                                  jax.grad(loss, argnums=(1, 2))(grouped, x, kernel)):
                np.testing.assert_allclose(fast, want, rtol=1e-4, atol=1e-4)

    ours = DepthwiseConv(5, 2).init(jax.random.PRNGKey(2), x)["params"]
    conv = nn.Conv(6, (5, 5), (2, 2), padding=[(2, 2)] * 2, feature_group_count=6, use_bias=False)
    flax_conv = conv.init(jax.random.PRNGKey(2), x)["params"]
    assert jax.tree_util.tree_map(jnp.shape, ours) == jax.tree_util.tree_map(jnp.shape, flax_conv)
    np.testing.assert_allclose(ours["kernel"], flax_conv["kernel"])            # same initialiser, same key
    np.testing.assert_allclose(DepthwiseConv(5, 2).apply({"params": ours}, x),
                               conv.apply({"params": flax_conv}, x), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda x, k: jnp.sum(depthwise_conv2d(x, k, 2)), argnums=(0, 1))(x, kernel.astype(jnp.bfloat16))
    assert (grads[0].dtype, grads[1].dtype) == (jnp.float32, jnp.bfloat16)     # each gradient in its primal's dtype
    assert DepthwiseConv(3).apply({"params": {"kernel": jnp.ones((3, 3, 1, 6))}},
                                  x.astype(jnp.bfloat16)).dtype == jnp.float32  # computes in its dtype
