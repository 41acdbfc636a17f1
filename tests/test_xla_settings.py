"""The XLA settings `import jaxdeid` applies (jaxdeid/xla_settings.py)."""

import json
import os
import subprocess
import sys

import jaxlib.version
import pytest

from jaxdeid.xla_settings import (DEFAULT_FLAGS, MIN_JAXLIB, OPT_OUT_ENV, YNN_FUSION_FLAG, _version_tuple,
                                  xla_flags_with_defaults)

OFF = f"{YNN_FUSION_FLAG}="


def test_defaults_go_before_the_users_flags():
    """XLA stops reading XLA_FLAGS at a token without '-': a flag after one would be dropped silently."""
    assert DEFAULT_FLAGS == (OFF,)
    assert xla_flags_with_defaults("", "0.10.2") == OFF
    assert xla_flags_with_defaults("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", "0.11.2") \
        == f"{OFF} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def test_a_flags_file_is_left_alone():
    assert xla_flags_with_defaults("/etc/xla_flags.txt", "0.10.2") == "/etc/xla_flags.txt"


def test_a_flag_the_user_named_is_kept_as_written():
    mine = f"{YNN_FUSION_FLAG}=individual_dot --xla_force_host_platform_device_count=4"
    assert xla_flags_with_defaults(mine, "0.10.2") == mine


def test_opt_out_and_old_jaxlib_leave_the_flags_alone():
    assert xla_flags_with_defaults("--a=1", "0.10.2", enabled=False) == "--a=1"
    # XLA aborts on a flag it does not know: a jaxlib older than MIN_JAXLIB gets nothing.
    assert xla_flags_with_defaults("", "0.9.9") == ""
    assert xla_flags_with_defaults("", "0.4.30") == ""
    assert xla_flags_with_defaults("", "0.10.0.dev20260101") == ""
    assert xla_flags_with_defaults("", "0.10.1") == OFF
    assert MIN_JAXLIB == (0, 10, 1)
    assert _version_tuple("0.10.2") == (0, 10, 2)
    assert _version_tuple("0.10.0.dev20260101") == (0, 10, 0)
    assert _version_tuple("0.9rc10") == (0, 9)


_PROBE = """
import json, os, sys
import jaxdeid
import jax, jax.numpy as jnp
x = jnp.ones((4, 32, 32, 64)); w = jnp.ones((3, 3, 64, 64))
conv = lambda w, x: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()
text = jax.jit(jax.grad(conv)).lower(w, x).compile().as_text()
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "ynn": "ynn" in text.lower()}))
"""


def _probe(**env) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", OPT_OUT_ENV)}
    environment.update(JAX_PLATFORMS="cpu", **env)   # env may bring XLA_FLAGS of its own
    out = subprocess.run([sys.executable, "-c", _PROBE], env=environment, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_turns_ynnpack_off_for_the_compiled_convolution_gradient():
    """In a fresh process, `import jaxdeid` before JAX starts: the compiled gradient has no YNNPACK fusion."""
    if _version_tuple(jaxlib.version.__version__) < MIN_JAXLIB:
        pytest.skip(f"jaxlib {jaxlib.version.__version__} predates the flag")
    on = _probe()
    assert OFF in on["flags"].split()
    assert not on["ynn"]
    # Behind a token without '-' (as a user's flags may have) it must still take effect.
    behind = _probe(XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    assert not behind["ynn"], behind["flags"]
    # The opt-out leaves XLA's own default, which (jaxlib 0.10.2, 0.11.2) does fuse with YNNPACK.
    off = _probe(**{OPT_OUT_ENV: "0"})
    assert OFF not in off["flags"].split()
    assert off["ynn"], "XLA no longer uses YNNPACK by default: jaxdeid/xla_settings.py may be obsolete"
