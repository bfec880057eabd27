"""The run plan: everything the trainer derives from the config, computed once.

Durations in the config are in epochs; `make_plan` converts them to steps
(`epochs_to_steps`, the one conversion) together with the per-block targets,
the cadences and the optimizer's numbers. The trainer, the loop and the step
read the plan, never the config.
"""

import dataclasses
import os

import ml_collections

from adanet_jax.model import factory
from adanet_jax.train import optim


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """The one conversion from a duration in epochs to optimizer steps."""
  return int(round(epochs * steps_per_epoch))


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """A run's numbers and choices, durations in optimizer steps.

  Attributes:
    steps_per_epoch: optimizer steps per epoch.
    num_steps: steps of the whole training.
    log_every_steps, eval_every_steps, checkpoint_every_steps: cadences of the
      periodic actions (<= 0: only after the last step; see `trainer.is_time`).
    sync_every_steps: the host waits for the device at least this often.
    profile_steps: steps traced by JAX's profiler after the first step of a
      launch (`profiling.StepProfiler`; 0: none).
    batch_size, eval_batch_size: global batch sizes.
    seed: the run's one seed.
    image_shape: (height, width, channels) of the model's input.
    num_classes: classes of the classifier.
    gated: whether the model has gates.
    targets: per-block target execution rates (1 everywhere without gates).
    fixed_blocks: blocks that always execute.
    loss_weight, loss_reduction: the target-rate loss's weight and reduction.
    temperature: the gates' Gumbel-softmax temperature in training.
    train_gate_mode, eval_gate_modes: gate modes of training and evaluation.
    init_from: a checkpoint or PyTorch file to start from ('' for none).
    optimizer: the optimizer's numbers (`optim.create_optimizer` builds it).
  """

  steps_per_epoch: int
  num_steps: int
  log_every_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int
  sync_every_steps: int
  profile_steps: int
  batch_size: int
  eval_batch_size: int
  seed: int
  image_shape: tuple[int, int, int]
  num_classes: int
  gated: bool
  targets: tuple[float, ...]
  fixed_blocks: tuple[int, ...]
  loss_weight: float
  loss_reduction: str
  temperature: float
  train_gate_mode: str
  eval_gate_modes: tuple[str, ...]
  init_from: str
  optimizer: optim.OptimizerSpec


def make_plan(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> RunPlan:
  """The plan of `config` for a dataset of `steps_per_epoch` steps per epoch.

  Raises:
    ConfigError: a value that cannot be planned (e.g. targets that do not fit
      the model).
  """
  t, o = config.train, config.optim
  num_steps = epochs_to_steps(t.num_epochs, steps_per_epoch)
  optimizer = optim.OptimizerSpec(
      schedule=o.schedule,
      learning_rate=optim.learning_rate(config),
      warmup_steps=epochs_to_steps(o.warmup_epochs, steps_per_epoch),
      total_steps=num_steps,
      # The drops are fractions of the training, so they follow its length.
      decay_steps=tuple(int(round(f * num_steps)) for f in o.decay_fractions),
      decay_factor=o.decay_factor,
      weight_decay=o.weight_decay,
      momentum=o.momentum,
      nesterov=o.nesterov,
  )
  modes = config.gates.eval_modes
  return RunPlan(
      steps_per_epoch=steps_per_epoch,
      num_steps=num_steps,
      log_every_steps=t.log_every_steps,
      eval_every_steps=epochs_to_steps(t.eval_every_epochs, steps_per_epoch),
      checkpoint_every_steps=config.checkpoint.every_steps,
      sync_every_steps=t.sync_every_steps,
      profile_steps=t.profile_steps,
      batch_size=t.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
      image_shape=(
          config.data.image_size,
          config.data.image_size,
          config.data.channels,
      ),
      num_classes=config.model.num_classes,
      gated=config.model.gated,
      targets=factory.block_targets(config),
      fixed_blocks=factory.fixed_blocks(config),
      loss_weight=config.loss.weight,
      loss_reduction=config.loss.reduction,
      temperature=config.gates.temperature,
      train_gate_mode=config.gates.train_mode,
      eval_gate_modes=(modes,) if isinstance(modes, str) else tuple(modes),
      init_from=os.path.expanduser(config.init_from),
      optimizer=optimizer,
  )
