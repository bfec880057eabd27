"""Optimiser and learning-rate schedule from the config.

SGD with momentum (PyTorch's form: no dampening) and coupled L2 weight decay
on every parameter, as the reference: the decay is added to the gradient
before the momentum. Durations are in epochs, converted to steps here only;
the 'step' schedule's drops are fractions of the training length, so they
follow an override of `train.num_epochs`.
"""

import ml_collections
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
  each number on its own is checked by `config_lib.validate`)."""
  o = config.optim
  if o.schedule not in SCHEDULES:
    raise ConfigError(f'optim.schedule={o.schedule!r} is unknown; allowed: {", ".join(SCHEDULES)}')
  fractions = tuple(o.decay_fractions)
  if any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
    raise ConfigError(f'optim.decay_fractions={fractions} must be increasing fractions of '
                      'the training in (0, 1)')


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Linear warmup, then 'step' (x decay_factor at each of decay_fractions of
  the training), 'cosine' (to 0 at the end of training) or 'constant'."""
  o = config.optim
  peak = learning_rate(config)
  warmup = epochs_to_steps(o.warmup_epochs, steps_per_epoch)
  total = epochs_to_steps(config.train.num_epochs, steps_per_epoch)
  if o.schedule == 'step':
    main = optax.piecewise_constant_schedule(
        peak, {step - warmup: o.decay_factor for step in decay_steps(config, steps_per_epoch)})
  elif o.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(total - warmup, 1))
  else:
    main = optax.constant_schedule(peak)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """Returns (optax transformation, schedule)."""
  schedule = create_schedule(config, steps_per_epoch)
  tx = optax.chain(
      optax.add_decayed_weights(config.optim.weight_decay),
      optax.sgd(schedule, momentum=config.optim.momentum or None, nesterov=config.optim.nesterov))
  return tx, schedule
