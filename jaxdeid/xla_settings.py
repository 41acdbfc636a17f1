"""XLA settings the package applies when it is imported, before JAX starts a backend.

One setting, for the CPU. XLA:CPU (jaxlib 0.10 and later) hands convolutions, and the
elementwise work it fuses around them, to its YNNPACK library path by default
(``--xla_cpu_experimental_ynn_fusion_type``). For this package's networks that path
is slow, above all for the gradients of convolutions. On the project's 2-core CPU
(jaxlib 0.10.2, float32; ``results/reference_stylegan2_ada_cpu.md`` has every configuration)
turning it off took:

* StyleGAN2's discriminator forward + backward (64 / 8192, batch 16): 3.13 → 6.73 images/s;
  the profile had put 80 % of the step in YNNPACK fusions of the weight and input gradients
  (the b64 ``conv0`` weight gradient alone: 1.50 s of 6.6 s, 8× its forward);
* StyleGAN2 synthesis from given w (64 / 8192): batch 1 5.00 → 11.22, batch 64 8.54 → 12.50 images/s.

With the setting off, XLA uses its own Eigen convolutions and emitted fusions. Matrix
products (``individual_dot``) measured the same either way, so the setting leaves
YNNPACK nothing at all, which is the simplest statement of it.

Rules (all in `xla_flags_with_defaults`, a pure function):

* the package's flags go *before* the user's: XLA stops reading ``XLA_FLAGS`` at the
  first token without a leading ``-`` and silently drops the rest;
* a flag that the user's ``XLA_FLAGS`` already names is kept as the user wrote it;
* an ``XLA_FLAGS`` that does not start with ``-`` names a flags file: it is left alone;
* ``JAXDEID_XLA_DEFAULTS=0`` turns the package's settings off altogether, also the
  escape hatch should a later jaxlib drop this experimental flag (XLA aborts the process
  on a flag it does not know);
* jaxlib before 0.10.1 gets nothing, for the same reason: the flag is known to exist
  in 0.10.1, 0.10.2 (here) and 0.11.2 (the GPU image).

The flag concerns only the CPU backend; a GPU process reads and ignores it. Results
record ``XLA_FLAGS`` in their provenance (`jaxdeid.results.provenance`), because the
convolution algorithm changes the last bits of every CPU number.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

try:
    from jaxlib.version import __version__ as JAXLIB_VERSION   # 6 ms; starts no backend
except ImportError:   # no jaxlib: nothing to configure, and every use of JAX fails on its own
    JAXLIB_VERSION = None

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
DEFAULT_FLAGS = (f"{YNN_FUSION_FLAG}=",)    # an empty list of fusion types: YNNPACK is not used
MIN_JAXLIB = (0, 10, 1)                       # the first jaxlib known to have the flag
OPT_OUT_ENV = "JAXDEID_XLA_DEFAULTS"          # "0": apply none of DEFAULT_FLAGS


def _version_tuple(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: '0.10.0.dev2026' -> (0, 10, 0), '0.11rc1' -> (0, 11)."""
    parts = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.end() < len(part):   # '11rc1': a pre-release suffix ends the release numbers
            break
    return tuple(parts)


def xla_flags_with_defaults(flags: str, jaxlib_version: str, enabled: bool = True) -> str:
    """`flags` (an ``XLA_FLAGS`` value) with each of DEFAULT_FLAGS put in front unless it is named already."""
    if not enabled or _version_tuple(jaxlib_version) < MIN_JAXLIB:
        return flags
    if flags.strip() and not flags.strip().startswith("-"):
        return flags   # a flags file
    named = {token.split("=", 1)[0] for token in flags.split()}
    missing = [flag for flag in DEFAULT_FLAGS if flag.split("=", 1)[0] not in named]
    return " ".join([*missing, flags.strip()]).strip()


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")   # not imported: no backend can have started
    started = getattr(bridge, "backends_are_initialized", None)
    return bool(started and started())


def apply() -> None:
    """Sets ``XLA_FLAGS`` for this process (module docstring); warns if JAX's backend already started."""
    if JAXLIB_VERSION is None:
        return
    current = os.environ.get("XLA_FLAGS", "")
    wanted = xla_flags_with_defaults(current, JAXLIB_VERSION, os.environ.get(OPT_OUT_ENV, "1") != "0")
    if wanted == current:
        return
    if _backend_started():
        warnings.warn(f"jaxdeid was imported after JAX started its backend, so XLA_FLAGS cannot take "
                      f"{' '.join(DEFAULT_FLAGS)}; convolutions on the CPU run several times slower "
                      f"(jaxdeid/xla_settings.py). Import jaxdeid first, or set the flag yourself.",
                      RuntimeWarning, stacklevel=3)
        return
    os.environ["XLA_FLAGS"] = wanted
