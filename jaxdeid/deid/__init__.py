"""The private-face step, its staged twin, the baselines, and the L_F fine-tuning.

    from jaxdeid.deid.pipeline import load_params
    from jaxdeid.deid import make_private_step
    params, untrained = load_params(config, "ours")               # every trained network, one pytree
    step = jax.jit(make_private_step(config, "ours"))             # or "pggan" / "stylegan1" / "stylegan2"
    private_frames, diagnostics = step(params, low_light_frames, key)

Modules: `methods` (the four methods), `step` (the fused step, `make_staged_pipeline`,
fail-closed fallbacks), `losses` (L_A eq. 7, L_F eq. 8: pure functions), `finetune`
(the ``deid_finetune`` task behind ``jaxdeid train deid``) and `pipeline` (the params
pytree: `load_params`, `init_params`, read from the component registry). The command
``jaxdeid deidentify IN OUT`` lives in `jaxdeid.commands.deidentify`.
"""

from .losses import fine_tuning_loss, finetune_terms, similarity_judgment_loss
from .methods import GENERATOR_ARCH, METHODS
from .step import make_private_step, make_stages, make_staged_pipeline

__all__ = ["make_private_step", "make_staged_pipeline", "make_stages", "METHODS", "GENERATOR_ARCH",
           "similarity_judgment_loss", "finetune_terms", "fine_tuning_loss"]
