"""The component registry: one record per network kind, read by every lookup."""

from __future__ import annotations

import jax
import pytest

from jaxdeid.commands.train import register
from jaxdeid.components import COMPONENTS, role_component, role_train_command
from jaxdeid.configs import get_config
from jaxdeid.deid.methods import METHODS
from jaxdeid.deid.pipeline import network_names


def _shapes(tree):
    return jax.tree_util.tree_map(lambda x: (tuple(x.shape), str(x.dtype)), tree)


@pytest.mark.parametrize("kind,arch", [(k, a) for k, c in sorted(COMPONENTS.items()) for a in (c.archs or (None,))])
def test_random_init_has_the_shapes_of_the_trained_variables(kind, arch, tmp_path):
    """A component's random init (untrained runs) and its trained inference variables (what
    `load` returns and the store ships) are the same pytree: same names, shapes and dtypes."""
    config = get_config("smoke", [f"workdir={tmp_path}", "weights_store="])
    component = COMPONENTS[kind]
    key = jax.random.PRNGKey(0)
    random = jax.eval_shape(lambda k: component.init(config, arch, k), key)
    task = component.make_task(config, arch)
    trained = jax.eval_shape(lambda k: component.inference(task.init(k)), key)
    assert _shapes(random) == _shapes(trained)


def test_train_command_choices_come_from_the_registry():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    train = parser._subparsers._group_actions[0].choices["train"]
    networks = train._subparsers._group_actions[0].choices
    assert set(networks) == set(COMPONENTS)
    for kind, component in COMPONENTS.items():
        arch_actions = [a for a in networks[kind]._actions if a.dest == "arch"]
        assert (tuple(arch_actions[0].choices) if arch_actions else ()) == component.archs


@pytest.mark.parametrize("method", METHODS)
def test_every_role_of_every_method_has_one_component(method):
    config = get_config("smoke")
    for role in network_names(config, method):
        component, arch = role_component(method, role)
        assert arch is None or arch in component.archs
        assert role_train_command(config, method, role).startswith(f"jaxdeid train {component.kind}")
