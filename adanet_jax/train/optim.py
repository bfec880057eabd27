"""Optimiser and learning-rate schedule from the config.

SGD with momentum (PyTorch's form: no dampening) and coupled L2 weight decay
on every parameter, as the reference: the decay is added to the gradient
before the momentum. Durations are in epochs, converted to steps here only;
the 'step' schedule's drops are fractions of the training length, so they
follow an override of `train.num_epochs`.

Every number of the optimizer (peak learning rate, warmup and decay steps,
decay factor, weight decay, momentum) is a runtime value: `optimizer_hparams`
turns the config into float32 arrays that the train step takes as an argument,
and `optimizer_from_hparams` builds the transformation from them inside the
step. A sweep over these numbers therefore compiles the step once. Only the
structure is static: the schedule's kind, the number of decay boundaries,
whether there is momentum, and Nesterov.
"""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adanet_jax.errors import ConfigError

SCHEDULES = ('step', 'cosine', 'constant')


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """The one conversion from a duration in epochs to optimizer steps."""
  return int(round(epochs * steps_per_epoch))


def learning_rate(config: ml_collections.ConfigDict) -> float:
  """Peak learning rate: base rate scaled linearly with the global batch."""
  o = config.optim
  return o.base_learning_rate * config.train.batch_size / o.base_batch_size


def decay_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, ...]:
  """Steps (0-based optimizer steps) from which the 'step' schedule has
  dropped by one more `decay_factor`: each of `optim.decay_fractions` of the
  training steps."""
  total = epochs_to_steps(config.train.num_epochs, steps_per_epoch)
  return tuple(int(round(f * total)) for f in config.optim.decay_fractions)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a schedule that cannot be built (the value of
  each number on its own is checked by `checks.validate`)."""
  o = config.optim
  if o.schedule not in SCHEDULES:
    raise ConfigError(f'optim.schedule={o.schedule!r} is unknown; allowed: {", ".join(SCHEDULES)}')
  fractions = tuple(o.decay_fractions)
  if any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
    raise ConfigError(f'optim.decay_fractions={fractions} must be increasing fractions of '
                      'the training in (0, 1)')


def optimizer_hparams(config: ml_collections.ConfigDict, steps_per_epoch: int) -> dict:
  """The optimizer's runtime numbers, as float32 numpy arrays.

  Args:
    config: the run's config (`optim`, `train.batch_size`, `train.num_epochs`).
    steps_per_epoch: optimizer steps per epoch.

  Returns:
    {'learning_rate' (peak), 'warmup_steps', 'cosine_steps' (steps of the
    cosine decay after warmup), 'decay_boundaries' (steps after warmup at which
    the 'step' schedule multiplies by 'decay_factor'), 'decay_factor',
    'weight_decay', 'momentum'}.
  """
  o = config.optim
  warmup = epochs_to_steps(o.warmup_epochs, steps_per_epoch)
  total = epochs_to_steps(config.train.num_epochs, steps_per_epoch)
  f32 = lambda v: np.asarray(v, np.float32)  # pylint: disable=unnecessary-lambda-assignment
  return {
      'learning_rate': f32(learning_rate(config)),
      'warmup_steps': f32(warmup),
      'cosine_steps': f32(max(total - warmup, 1)),
      'decay_boundaries': f32([s - warmup for s in decay_steps(config, steps_per_epoch)
                               ]).reshape(-1),
      'decay_factor': f32(o.decay_factor),
      'weight_decay': f32(o.weight_decay),
      'momentum': f32(o.momentum),
  }


def schedule_from_hparams(kind: str, hparams: dict) -> optax.Schedule:
  """Linear warmup, then 'step' (x decay_factor at each decay boundary),
  'cosine' (to 0 at the end of training) or 'constant'.

  The arithmetic is optax's (linear_schedule, piecewise_constant_schedule,
  cosine_decay_schedule, join_schedules) written over array values, so the
  learning rate equals the one optax computes from Python numbers.
  """
  peak, warmup = hparams['learning_rate'], hparams['warmup_steps']

  def main(count):
    if kind == 'step':
      value = peak
      for i in range(hparams['decay_boundaries'].shape[0]):
        indicator = jnp.maximum(0.0, jnp.sign(hparams['decay_boundaries'][i] - count))
        value = value * indicator + (1 - indicator) * hparams['decay_factor'] * value
      return value
    if kind == 'cosine':
      count = jnp.minimum(count, hparams['cosine_steps'])
      return peak * (0.5 * (1 + jnp.cos(jnp.pi * count / hparams['cosine_steps'])))
    if kind == 'constant':
      return peak * jnp.ones_like(count, jnp.float32)
    raise ConfigError(f'optim.schedule={kind!r} is unknown; allowed: {", ".join(SCHEDULES)}')

  def schedule(step):
    # Linear warmup from 0; with no warmup `step < 0` never holds, so the
    # result is main(step) (the division guard only keeps the unused branch finite).
    frac = 1 - jnp.clip(step, 0, warmup) / jnp.maximum(warmup, 1.0)
    ramp = (0.0 - peak) * frac + peak
    return jnp.where(step < warmup, ramp, main(step - warmup))

  return schedule


def optimizer_from_hparams(hparams: dict, *, schedule: str, momentum: bool,
                           nesterov: bool) -> optax.GradientTransformation:
  """Coupled-L2 SGD built from runtime numbers; its state has the same tree
  whatever the numbers are.

  Args:
    hparams: `optimizer_hparams` values (numpy or traced arrays).
    schedule: the schedule's kind (static).
    momentum: whether there is a momentum buffer (static; config momentum != 0).
    nesterov: Nesterov momentum (static).
  """
  return optax.chain(
      optax.add_decayed_weights(hparams['weight_decay']),
      optax.sgd(schedule_from_hparams(schedule, hparams),
                momentum=hparams['momentum'] if momentum else None, nesterov=nesterov))


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The config's learning-rate schedule (see `schedule_from_hparams`)."""
  return schedule_from_hparams(config.optim.schedule, optimizer_hparams(config, steps_per_epoch))


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """Returns (optax transformation, schedule) with the config's numbers fixed."""
  hparams = optimizer_hparams(config, steps_per_epoch)
  tx = optimizer_from_hparams(hparams, schedule=config.optim.schedule,
                              momentum=bool(config.optim.momentum),
                              nesterov=config.optim.nesterov)
  return tx, schedule_from_hparams(config.optim.schedule, hparams)
