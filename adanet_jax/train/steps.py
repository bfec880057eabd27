"""Train state and the pure step functions.

`train_step(state, batch, key) -> (state, metrics)` and
`eval_step(state, batch, key, batch_index) -> metrics` know nothing about devices: compiled
with `jax.jit` over a batch sharded on a ('data',) mesh they compute exactly
what they compute on one device (BatchNorm statistics and gate batch means
over the global batch). Static choices are bound with functools.partial; the
optimizer is an optax transformation held by the state. The loss targets and
weight and the gate temperature come in as the `hparams` argument, so runs
that differ only in them share one compiled step (and one entry of the
persistent compilation cache).
"""

import functools
from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adanet_jax.model import accounting
from adanet_jax.train import losses
from adanet_jax.train import plan as plan_lib

# Named rng streams derived from fold_in(seed key, step).
GUMBEL_STREAM = 0
EVAL_GUMBEL_STREAM = 1  # the gates' noise of an evaluation in mode 'sample'


class TrainState(train_state.TrainState):
  batch_stats: Any = None


def create_train_state(
    model, tx: optax.GradientTransformation, image_shape: tuple, key: jax.Array
) -> TrainState:
  """Initialises parameters, BatchNorm statistics and the optimizer state.

  Args:
    model: the flax module.
    tx: the optimizer, held by the state.
    image_shape: (height, width, channels) of one input image.
    key: the initialisation key.
  """
  variables = model.init(
      {'params': key}, jnp.zeros((1, *image_shape), jnp.float32), train=False
  )
  return TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      batch_stats=variables['batch_stats'],
      tx=tx,
  )


def abstract_train_state(
    model,
    tx: optax.GradientTransformation,
    image_shape: tuple,
    sharding: jax.sharding.Sharding | None = None,
):
  """The shapes and dtypes of `create_train_state`, computed without
  initialising anything: what a checkpoint restores into.

  Args:
    model, tx, image_shape: as `create_train_state`.
    sharding: where every restored leaf goes (None: leave it unset).
  """
  shapes = jax.eval_shape(
      functools.partial(create_train_state, model, tx, image_shape),
      jax.random.key(0),
  )
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      shapes,
  )


def step_key(key: jax.Array, step: jax.Array, stream: int) -> jax.Array:
  """The key of one rng stream at one step: a function of (seed, step) only."""
  return jax.random.fold_in(jax.random.fold_in(key, step), stream)


def make_hparams(plan: plan_lib.RunPlan) -> dict:
  """The runtime numbers of the train step, as float32 numpy arrays.

  Args:
    plan: the run's plan.

  Returns:
    {'targets' (one per block), 'loss_weight', 'temperature' (of the gates'
    Gumbel-softmax)}.
  """
  return {
      'targets': np.asarray(plan.targets, np.float32),
      'loss_weight': np.asarray(plan.loss_weight, np.float32),
      'temperature': np.asarray(plan.temperature, np.float32),
  }


def train_step(
    state: TrainState,
    batch: dict,
    key: jax.Array,
    hparams: dict,
    *,
    reduction: str,
    gate_mode: str,
    schedule: optax.Schedule,
):
  """One optimizer step (`state.tx`) on a global batch {'image', 'label'}.

  Args:
    state: the train state.
    batch: the global batch.
    key: the run's seed key; the step's streams are folded in from it.
    hparams: `make_hparams` values (runtime arrays).
    reduction, gate_mode: static loss and gate choices.
    schedule: the learning-rate schedule of `state.tx`, for the metric.

  Returns:
    The new state and a dict of metric sums over the batch (`count` is the
    number of images) so that metrics add up across steps.
  """

  def loss_fn(params):
    (logits, aux), updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'],
        train=True,
        gate_mode=gate_mode,
        temperature=hparams['temperature'],
        key=step_key(key, state.step, GUMBEL_STREAM),
        mutable=['batch_stats'],
    )
    loss, parts = losses.total_loss(
        logits,
        batch['label'],
        aux,
        hparams['targets'],
        hparams['loss_weight'],
        reduction,
    )
    return loss, (logits, aux, updates, parts)

  (loss, (logits, aux, updates, parts)), grads = jax.value_and_grad(
      loss_fn, has_aux=True
  )(state.params)
  new_state = state.apply_gradients(
      grads=grads, batch_stats=updates['batch_stats']
  )
  n = batch['label'].shape[0]
  return new_state, {
      'count': jnp.float32(n),
      'loss': loss * n,
      'ce': parts['ce'] * n,
      'target_loss': parts['target_loss'] * n,
      'correct': jnp.sum(jnp.argmax(logits, -1) == batch['label']).astype(
          jnp.float32
      ),
      'gates': jnp.sum(jax.lax.stop_gradient(aux['gates']), axis=0),
      # The step itself if its loss is not finite, else +inf (combined by min).
      'first_nonfinite_step': jnp.where(
          jnp.isfinite(loss), jnp.inf, state.step.astype(jnp.float32)
      ),
      'learning_rate': schedule(state.step) * n,
  }


def make_train_step(plan: plan_lib.RunPlan, schedule: optax.Schedule):
  """`train_step(state, batch, key, hparams)` with the plan's static choices bound.

  Args:
    plan: the run's plan.
    schedule: the schedule of the state's optimizer (`optim.create_optimizer`).
  """
  return functools.partial(
      train_step,
      reduction=plan.loss_reduction,
      gate_mode=plan.train_gate_mode,
      schedule=schedule,
  )


def eval_key(
    key: jax.Array, step: jax.Array, batch_index: jax.Array
) -> jax.Array:
  """The gates' key for evaluation batch `batch_index` of the state of
  `step`: a function of (seed, step, batch index) only, so two evaluations
  of one checkpoint draw the same noise."""
  return jax.random.fold_in(
      step_key(key, step, EVAL_GUMBEL_STREAM), batch_index
  )


def eval_step(
    state: TrainState,
    batch: dict,
    key: jax.Array,
    batch_index: jax.Array,
    *,
    gate_mode: str,
    num_classes: int,
):
  """Sums over the real (mask = 1) examples of one evaluation batch.

  `key` (the run's seed key) and `batch_index` give the gates' noise in mode
  `sample` (`eval_key`); the other modes draw none.

  Returns counts, correct predictions, cross-entropy, per-block sums of the
  gate values and of the branches computed, and the per-class x per-block
  gate sums (paper Fig. 4). Exact MACs follow from the per-block sums of the
  branches computed (`accounting.CostTable`), so they are not summed here.
  """
  logits, aux = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['image'],
      train=False,
      gate_mode=gate_mode,
      key=(
          eval_key(key, state.step, batch_index)
          if gate_mode == 'sample'
          else None
      ),
  )
  mask = batch['mask']
  gates = aux['gates'] * mask[:, None]
  executed = (
      accounting.executed_branches(aux['gates'], gate_mode) * mask[:, None]
  )
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  one_hot = (
      jax.nn.one_hot(batch['label'], num_classes, dtype=jnp.float32)
      * mask[:, None]
  )
  return {
      'count': mask.sum(),
      'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
      'ce': jnp.sum(ce * mask),
      'gates': gates.sum(axis=0),
      'executed': executed.sum(axis=0),
      'class_count': one_hot.sum(axis=0),
      'class_gates': one_hot.T @ gates,
  }
