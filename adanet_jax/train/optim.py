"""The optimiser and its learning-rate schedule, as optax transformations.

SGD with momentum (PyTorch's form: no dampening) and coupled L2 weight decay
on every parameter, as the reference: the decay is added to the gradient
before the momentum. The schedule is a linear warmup from 0, then 'step'
(multiplied by `decay_factor` at each of `decay_steps`), 'cosine' (to 0 at
the end of training) or 'constant', composed from optax's own schedules.

The numbers come in as an `OptimizerSpec` in steps (`plan.make_plan` converts
the config's epochs); the transformation is built once and held by the train
state, so its numbers are constants of the compiled step.
"""

import collections
import dataclasses

import ml_collections
import optax

from adanet_jax.errors import ConfigError

SCHEDULES = ('step', 'cosine', 'constant')


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """The optimizer's numbers, durations in optimizer steps.

  Attributes:
    schedule: one of SCHEDULES.
    learning_rate: the peak learning rate (reached at the end of warmup).
    warmup_steps: steps of the linear warmup from 0.
    total_steps: steps of the whole training (the cosine reaches 0 there).
    decay_steps: 0-based steps from which the 'step' schedule has dropped by
      one more `decay_factor`.
    decay_factor: the 'step' schedule's factor at each drop.
    weight_decay: coupled L2 coefficient.
    momentum: heavy-ball coefficient (0: plain SGD, no momentum buffer).
    nesterov: Nesterov momentum.
  """

  schedule: str
  learning_rate: float
  warmup_steps: int
  total_steps: int
  decay_steps: tuple[int, ...]
  decay_factor: float
  weight_decay: float
  momentum: float
  nesterov: bool


def learning_rate(config: ml_collections.ConfigDict) -> float:
  """Peak learning rate: base rate scaled linearly with the global batch."""
  o = config.optim
  return o.base_learning_rate * config.train.batch_size / o.base_batch_size


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a schedule that cannot be built (the value of
  each number on its own is checked by `checks.validate`)."""
  o = config.optim
  if o.schedule not in SCHEDULES:
    raise ConfigError(
        f'optim.schedule={o.schedule!r} is unknown; allowed: {", ".join(SCHEDULES)}'
    )
  fractions = tuple(o.decay_fractions)
  if any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(
      fractions
  ):
    raise ConfigError(
        f'optim.decay_fractions={fractions} must be increasing fractions of '
        'the training in (0, 1)'
    )


def create_schedule(spec: OptimizerSpec) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then the 'step', 'cosine' or
  'constant' schedule, counted from the end of warmup."""
  peak, warmup = spec.learning_rate, spec.warmup_steps
  if spec.schedule == 'step':
    # Two drops on one step (rounding) multiply there twice.
    drops = collections.Counter(s - warmup for s in spec.decay_steps)
    main = optax.piecewise_constant_schedule(
        peak, {step: spec.decay_factor**n for step, n in drops.items()}
    )
  elif spec.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(spec.total_steps - warmup, 1))
  elif spec.schedule == 'constant':
    main = optax.constant_schedule(peak)
  else:
    raise ConfigError(
        f'optim.schedule={spec.schedule!r} is unknown; allowed: '
        f'{", ".join(SCHEDULES)}'
    )
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], [warmup]
  )


def create_optimizer(
    spec: OptimizerSpec,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Coupled-L2 SGD: chain(add_decayed_weights, sgd(schedule, momentum)).

  Returns:
    (the transformation, its learning-rate schedule): the step's
    `learning_rate` metric reads the same schedule the transformation uses.
  """
  schedule = create_schedule(spec)
  tx = optax.chain(
      optax.add_decayed_weights(spec.weight_decay),
      optax.sgd(
          schedule, momentum=spec.momentum or None, nesterov=spec.nesterov
      ),
  )
  return tx, schedule
