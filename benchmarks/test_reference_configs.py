"""StyleGAN2 synthesis and discriminator step at stylegan2-ada-pytorch's configurations.

Rows ``reference_synthesis_<res>_<base>`` (batch 1, 16, 64) and
``reference_d_step_<res>_<base>`` (batch 16), float32, independent of the preset: the
configurations are fixed (reference_configs.py), so anyone can set them beside the
reference implementation's figures. ``benchmarks/reference_stylegan2_ada.py`` times
both implementations one after another on one machine.

Opt-in (``JAXDEID_BENCH_REFERENCE=1``): the 16 rows take minutes on a CPU (128/16384 at
batch 64 is ~21 s a call on 2 cores), and CI's reduced benchmark run does not need them.
"""

import os

import pytest

from harness import compile_and_analyse, run_benchmark
from reference_configs import CONFIGS, SYNTHESIS_BATCHES, config_name, discriminator_step, synthesis

# A generous number of rounds is not needed to compare with another implementation at
# several images per second.
ROUNDS = 3

pytestmark = pytest.mark.skipif(os.environ.get("JAXDEID_BENCH_REFERENCE", "") in ("", "0"),
                                reason="reference-configuration rows: set JAXDEID_BENCH_REFERENCE=1")


@pytest.mark.parametrize("batch", SYNTHESIS_BATCHES)
@pytest.mark.parametrize("res,base", CONFIGS, ids=[f"{r}_{b}" for r, b in CONFIGS])
def test_reference_synthesis(benchmark, res, base, batch):
    fn, args, params = synthesis(res, base, batch)
    compiled, info = compile_and_analyse(fn, *args)
    run_benchmark(benchmark, compiled, args, images=batch, info=info, name=f"reference_synthesis_{res}_{base}",
                  preset="reference", rounds=ROUNDS, stage="reference", config=config_name(res, base),
                  params=params)


@pytest.mark.parametrize("res,base", CONFIGS, ids=[f"{r}_{b}" for r, b in CONFIGS])
def test_reference_d_step(benchmark, res, base):
    fn, args, params = discriminator_step(res, base)
    compiled, info = compile_and_analyse(fn, *args)
    batch = int(args[1].shape[0])
    run_benchmark(benchmark, compiled, args, images=batch, info=info, name=f"reference_d_step_{res}_{base}",
                  preset="reference", rounds=ROUNDS, stage="reference", config=config_name(res, base),
                  params=params)
