"""The initial train state of a run, replicated over its mesh.

Initialised op by op, not as one compiled program: XLA:CPU compiles a deep
model's initialisation (its hundreds of random draws) far more slowly as one
program, while the small op-by-op programs come back from the persistent
compilation cache (figures: README, "Compilation cache"). With several
processes only process 0 initialises and sends the values to the others: the
cache keys op-by-op programs by device and only process 0 writes it, so the
others would compile every op at every launch."""

import functools

import jax
from jax.experimental import multihost_utils
import numpy as np
import optax

from adanet_jax.train import placement as placement_lib
from adanet_jax.train import steps


def initial_state(
    model,
    tx: optax.GradientTransformation,
    image_shape: tuple,
    seed: int,
    placement: placement_lib.Placement,
) -> steps.TrainState:
  """`steps.create_train_state` from `seed`, replicated over `placement`'s mesh.

  Args:
    model: the flax module.
    tx: the optimizer the state holds.
    image_shape: (height, width, channels) of one input image.
    seed: the run's seed.
    placement: where the state goes.
  """
  create = functools.partial(
      steps.create_train_state, model, tx, image_shape, jax.random.key(seed)
  )
  if jax.process_count() == 1:
    state = jax.device_get(create())
  else:
    local = (
        jax.device_get(create())
        if jax.process_index() == 0
        else jax.tree.map(
            lambda x: np.zeros(x.shape, x.dtype),
            steps.abstract_train_state(model, tx, image_shape),
        )
    )
    state = jax.device_get(multihost_utils.broadcast_one_to_all(local))
  return placement.replicate(state)
