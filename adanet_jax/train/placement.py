"""Where a run's arrays live: a ('data',) mesh of the devices, the batch
sharded over it and everything else replicated.

Data parallelism is `jax.jit` over arrays sharded this way (pmap's
successor): the result equals the one-device computation. Host values are
placed per device, because `device_put` cannot place a host value on the
devices of other processes.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np


class Placement:
  """The mesh of a run and its two shardings.

  Attributes:
    mesh: a 1-D ('data',) mesh of the devices.
    replicated: the sharding of the state, keys and hyperparameters.
    data: the sharding of a global batch (split on its first axis).
  """

  def __init__(self, devices=None):
    devices = devices or jax.devices()
    self.mesh = jax.make_mesh(
        (len(devices),),
        ('data',),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices,
    )
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))

  def replicate(self, tree):
    """Host values (the same on every process) as arrays replicated over the mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), self.replicated, lambda i: np.asarray(x)[i]
        ),
        tree,
    )

  def to_global(self, batch: dict) -> dict:
    """A global array sharded over 'data' from this process's share."""
    return {
        k: jax.make_array_from_process_local_data(self.data, v)
        for k, v in batch.items()
    }

  def seed_key(self, seed: int) -> jax.Array:
    """The run's key, replicated."""
    # Made by a compiled function: device_put cannot place a host value on the
    # devices of other processes.
    return jax.jit(
        lambda: jax.random.key(seed), out_shardings=self.replicated
    )()
