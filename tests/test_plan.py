"""Tests of `adanet_jax.train.plan`: exact step counts, cadences, targets and
optimizer numbers of a run, computed once from the config."""

import dataclasses

import pytest

from adanet_jax.data import input_pipeline
from adanet_jax.train import optim
from adanet_jax.train import plan as plan_lib


def test_epochs_to_steps():
  assert plan_lib.epochs_to_steps(350, 196) == 68_600
  assert plan_lib.epochs_to_steps(0.5, 11) == 6


def test_digits_plan(load_config):
  # 1,437 images at batch 128: 11 steps per epoch
  config = load_config('digits.py')
  steps_per_epoch = input_pipeline.create_dataset(config).steps_per_epoch
  assert steps_per_epoch == 11
  plan = plan_lib.make_plan(config, steps_per_epoch)
  assert plan == plan_lib.RunPlan(
      steps_per_epoch=11,
      num_steps=1_100,
      log_every_steps=44,
      eval_every_steps=110,
      checkpoint_every_steps=110,
      sync_every_steps=10,
      profile_steps=0,
      batch_size=128,
      eval_batch_size=128,
      seed=0,
      image_shape=(8, 8, 1),
      num_classes=10,
      gated=True,
      targets=(0.6,) * 9,
      fixed_blocks=(),
      loss_weight=2.0,
      loss_reduction='mean',
      temperature=1.0,
      train_gate_mode='sample',
      eval_gate_modes=('deterministic',),
      init_from='',
      optimizer=optim.OptimizerSpec(
          schedule='cosine',
          learning_rate=0.1,
          warmup_steps=11,
          total_steps=1_100,
          decay_steps=(471, 786),
          decay_factor=0.1,
          weight_decay=5e-4,
          momentum=0.9,
          nesterov=False,
      ),
  )


def test_overrides_carry_through_the_plan(load_config):
  config = load_config('digits.py', 'depth=8,epochs=3,target=1.0')
  config.train.batch_size = 64  # 22 steps per epoch
  config.train.eval_every_epochs = 0.5  # 11 steps
  config.optim.warmup_epochs = 0.25  # 5.5 steps: rounds to 6 (half to even)
  config.gates.eval_modes = ('deterministic', 'expected')
  plan = plan_lib.make_plan(config, 22)
  assert (
      plan.num_steps,
      plan.eval_every_steps,
      plan.optimizer.warmup_steps,
  ) == (66, 11, 6)
  assert plan.optimizer.learning_rate == pytest.approx(0.05)  # 0.1 x 64 / 128
  assert plan.optimizer.decay_steps == (28, 47)  # 3/7 and 5/7 of 66
  # Target 1 everywhere: every block is fixed on.
  assert plan.targets == (1.0,) * 3 and plan.fixed_blocks == (0, 1, 2)
  assert plan.eval_gate_modes == ('deterministic', 'expected')


def test_plan_is_frozen(load_config):
  plan = plan_lib.make_plan(load_config('digits.py'), 11)
  with pytest.raises(dataclasses.FrozenInstanceError):
    plan.num_steps = 5
