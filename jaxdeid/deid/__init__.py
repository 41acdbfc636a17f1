"""The private-face step, its staged twin, the baselines, and the L_F fine-tuning losses.

    from jaxdeid.deid import make_private_step, load_params
    params, untrained = load_params(config, "ours")               # every trained network, one pytree
    step = jax.jit(make_private_step(config, "ours"))             # or "pggan" / "stylegan1" / "stylegan2"
    private_frames, diagnostics = step(params, low_light_frames, key)

Modules: `step` (the fused step, `make_staged_pipeline`, fail-closed fallbacks),
`pipeline` (params pytree: `load_params`, `init_params`), `losses` (L_A eq. 7, L_F
eq. 8, the ``deid_finetune`` task behind ``jaxdeid train deid``). The command
``jaxdeid deidentify IN OUT`` lives in `jaxdeid.commands.deidentify`.
"""

from .losses import fine_tuning_loss, finetune_terms, similarity_judgment_loss
from .pipeline import init_params, load_params, network_names
from .step import GENERATOR_ARCH, METHODS, make_private_step, make_stages, make_staged_pipeline

__all__ = ["make_private_step", "make_staged_pipeline", "make_stages", "METHODS", "GENERATOR_ARCH",
           "init_params", "load_params", "network_names",
           "similarity_judgment_loss", "finetune_terms", "fine_tuning_loss"]
