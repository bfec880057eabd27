"""Train state and the pure step functions.

`train_step(state, batch, key) -> (state, metrics)` and
`eval_step(state, batch) -> metrics` know nothing about devices: compiled
with `jax.jit` over a batch sharded on a ('data',) mesh they compute exactly
what they compute on one device (BatchNorm statistics and gate batch means
over the global batch). Static choices are bound with functools.partial.
"""

import functools
from typing import Any, Sequence

from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

from adanet_jax import accounting, losses, models

# Named rng streams derived from fold_in(seed key, step).
GUMBEL_STREAM = 0


class TrainState(train_state.TrainState):
  batch_stats: Any = None


def create_train_state(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
                       key: jax.Array) -> TrainState:
  """Initialises parameters, BatchNorm statistics and the optimizer state."""
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  variables = model.init({'params': key}, jnp.zeros((1, *shape), jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables['batch_stats'], tx=tx)


def step_key(key: jax.Array, step: jax.Array, stream: int) -> jax.Array:
  """The key of one rng stream at one step: a function of (seed, step) only."""
  return jax.random.fold_in(jax.random.fold_in(key, step), stream)


def train_step(state: TrainState, batch: dict, key: jax.Array, *, targets: Sequence[float],
               loss_weight: float, reduction: str, gate_mode: str,
               schedule: optax.Schedule | None = None):
  """One SGD step on a global batch {'image', 'label'}.

  Returns the new state and a dict of metric sums over the batch (`count` is
  the number of images) so that metrics add up across steps.
  """
  rngs = {'gumbel': step_key(key, state.step, GUMBEL_STREAM)}

  def loss_fn(params):
    (logits, aux), updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        gate_mode=gate_mode, rngs=rngs, mutable=['batch_stats'])
    loss, parts = losses.total_loss(logits, batch['label'], aux, targets, loss_weight, reduction)
    return loss, (logits, aux, updates, parts)

  (loss, (logits, aux, updates, parts)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=updates['batch_stats'])
  n = batch['label'].shape[0]
  metrics = {
      'count': jnp.float32(n),
      'loss': loss * n,
      'ce': parts['ce'] * n,
      'target_loss': parts['target_loss'] * n,
      'correct': jnp.sum(jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32),
      'gates': jnp.sum(jax.lax.stop_gradient(aux['gates']), axis=0),
      # The step itself if its loss is not finite, else +inf (combined by min).
      'first_nonfinite_step': jnp.where(jnp.isfinite(loss), jnp.inf,
                                        state.step.astype(jnp.float32)),
  }
  if schedule is not None:
    metrics['learning_rate'] = schedule(state.step) * n
  return new_state, metrics


def make_train_step(config: ml_collections.ConfigDict, schedule=None):
  """`train_step` with the config's static choices bound."""
  return functools.partial(
      train_step, targets=models.block_targets(config), loss_weight=config.loss.weight,
      reduction=config.loss.reduction, gate_mode=config.gates.train_mode, schedule=schedule)


def eval_step(state: TrainState, batch: dict, *, gate_mode: str, num_classes: int):
  """Sums over the real (mask = 1) examples of one evaluation batch.

  Returns counts, correct predictions, cross-entropy, per-block sums of the
  gate values and of the branches computed, and the per-class x per-block
  gate sums (paper Fig. 4). Exact MACs follow from the per-block sums of the
  branches computed (`accounting.CostTable`), so they are not summed here.
  """
  logits, aux = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                               batch['image'], train=False, gate_mode=gate_mode)
  mask = batch['mask']
  gates = aux['gates'] * mask[:, None]
  executed = accounting.executed_branches(aux['gates'], gate_mode) * mask[:, None]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  one_hot = jax.nn.one_hot(batch['label'], num_classes, dtype=jnp.float32) * mask[:, None]
  return {
      'count': mask.sum(),
      'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
      'ce': jnp.sum(ce * mask),
      'gates': gates.sum(axis=0),
      'executed': executed.sum(axis=0),
      'class_count': one_hot.sum(axis=0),
      'class_gates': one_hot.T @ gates,
  }
