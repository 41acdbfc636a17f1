"""Data parallelism on JAX's own runtime: one mesh axis ``data``, parameters replicated.

Every training step and the private step take their batch sharded along its
leading axis over all devices and their state replicated; `jax.jit` then
partitions the computation (GSPMD) and inserts the cross-device reductions that
a global-batch loss or BatchNorm needs, so the numbers equal a single-device run
up to float reassociation (``tests/test_sharding.py``).

Multi-host: call `initialize_distributed()` first on every host (it wraps
``jax.distributed.initialize``, which reads the coordinator address, process
count and process id from the cluster environment or from the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` variables).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """Starts the multi-host runtime when asked to (JAXDEID_DISTRIBUTED=1); a no-op otherwise."""
    if os.environ.get("JAXDEID_DISTRIBUTED") == "1":
        kwargs = {}
        if "JAX_COORDINATOR_ADDRESS" in os.environ:
            kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                          num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                          process_id=int(os.environ["JAX_PROCESS_ID"]))
        jax.distributed.initialize(**kwargs)


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over every device, or over the first `num_devices` (scale-out benchmarks)."""
    if num_devices is not None and not 1 <= num_devices <= jax.device_count():
        raise ValueError(f"num_devices={num_devices}, but this process sees {jax.device_count()} device(s)")
    devices = jax.devices()[: num_devices or jax.device_count()]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch, mesh: Mesh):
    """Splits every array's leading axis over ``data``; arrays whose leading axis does not
    divide the device count (or scalars) are replicated instead."""
    n = mesh.devices.size

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        spec = P(DATA_AXIS) if x.ndim >= 1 and x.shape[0] % n == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(put, batch)
