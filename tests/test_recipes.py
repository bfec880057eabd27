"""The recipe configs: their values are the paper's and the reference code's,
every config under configs/ trains a step and evaluates a whole split
(tfds mock data), and a bfloat16 step agrees with the float32 step."""

import glob
import os

from conftest import REPO
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from adanet_jax.data import input_pipeline, tfds_pipeline
from adanet_jax.model import factory
from adanet_jax.train import optim, trainer
from adanet_jax.train import plan as plan_lib

CONFIG_FILES = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
)
MOCK_EXAMPLES = (
    20  # per split: 2 steps of 8 per epoch, evaluation 16 + 4 real (12 padding)
)
# Compile time on 2 CPU cores: the step-and-evaluate test runs each config's
# smallest member (the recipe values are checked above at full size; depth
# changes only the number of blocks) and ImageNet models at 32 x 32.
SMALL_ARGS = {
    'cifar10.py': 'depth=8',
    'cifar100.py': 'depth=8',
    'digits.py': 'depth=8',
    'wide_cifar10.py': 'depth=10,width=2',
}
TEST_IMAGE_SIZE = {'imagenet2012': 32}
EVAL_BATCH = {
    'digits': 184
}  # its real 360 test images: 184 + 176 real (8 padding)


def _lr_at_epochs(config, epochs, steps_per_epoch=100):
  schedule = optim.create_schedule(
      plan_lib.make_plan(config, steps_per_epoch).optimizer
  )
  return [
      float(schedule(plan_lib.epochs_to_steps(e, steps_per_epoch)))
      for e in epochs
  ]


def test_cifar10_recipe_is_the_reference(load_config):
  c = load_config('cifar10.py')
  assert (c.model.name, c.model.depth, c.model.width, c.model.gated) == (
      'cifar_resnet',
      110,
      1,
      True,
  )
  assert (c.data.name, c.model.num_classes) == ('cifar10', 10)
  assert factory.block_targets(c) == (0.7,) * 54
  assert (c.loss.weight, c.loss.reduction) == (2.0, 'mean')
  assert (c.train.batch_size, c.train.num_epochs) == (256, 350.0)
  assert c.optim.decay_fractions == (150 / 350, 250 / 350)
  assert (c.optim.momentum, c.optim.nesterov, c.optim.weight_decay) == (
      0.9,
      False,
      5e-4,
  )
  assert optim.learning_rate(c) == 0.1
  np.testing.assert_allclose(
      _lr_at_epochs(c, [0, 149.99, 150, 249.99, 250, 349.99]),
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
      rtol=1e-6,
  )
  c.train.batch_size = 512  # the LR follows the batch
  assert optim.learning_rate(c) == 0.2
  plain = load_config('cifar10.py', 'gated=false')
  assert not plain.model.gated and factory.block_targets(plain) == (1.0,) * 54


def test_cifar100_is_the_cifar10_recipe_with_100_classes(load_config):
  c10, c100 = load_config('cifar10.py'), load_config('cifar100.py')
  assert (c100.data.name, c100.model.num_classes) == ('cifar100', 100)
  c100.data.name, c100.model.num_classes = 'cifar10', 10
  assert c100.to_dict() == c10.to_dict()
  c = load_config('cifar100.py', 'depth=56,gated=false')
  assert (c.model.depth, c.model.gated, c.model.num_classes) == (56, False, 100)


@pytest.mark.parametrize(
    'arch,t,targets',
    [
        (
            'resnet50',
            0.4,
            (
                1,
                1,
                0.8,
                1,
                0.4,
                0.4,
                0.4,
                1,
                0.4,
                0.4,
                0.4,
                0.4,
                0.4,
                1,
                0.7,
                1,
            ),
        ),
        (
            'resnet50',
            0.5,
            (
                1,
                1,
                0.8,
                1,
                0.5,
                0.5,
                0.5,
                1,
                0.5,
                0.5,
                0.5,
                0.5,
                0.5,
                1,
                0.7,
                1,
            ),
        ),
        (
            'resnet50',
            0.6,
            (
                1,
                1,
                0.8,
                1,
                0.6,
                0.6,
                0.6,
                1,
                0.6,
                0.6,
                0.6,
                0.6,
                0.6,
                1,
                0.7,
                1,
            ),
        ),
        (
            'resnet50',
            0.7,
            (
                1,
                1,
                0.8,
                1,
                0.7,
                0.7,
                0.7,
                1,
                0.7,
                0.7,
                0.7,
                0.7,
                0.7,
                1,
                0.7,
                1,
            ),
        ),
        ('resnet101', 0.3, (1,) * 8 + (0.3,) * 25),
        ('resnet101', 0.5, (1,) * 8 + (0.5,) * 25),
    ],
)
def test_imagenet_recipes_are_the_reference(load_config, arch, t, targets):
  c = load_config('imagenet.py', f'{arch},t={t}')
  assert factory.block_targets(c) == targets
  assert (
      c.model.name,
      c.model.num_classes,
      c.data.name,
      c.data.image_size,
  ) == ('imagenet_resnet', 1000, 'imagenet2012', 224)
  assert (c.loss.weight, c.loss.reduction) == (1.0, 'mean')
  assert (c.train.batch_size, c.train.num_epochs) == (256, 100.0)
  assert c.optim.decay_fractions == (0.3, 0.6, 0.9)
  assert (c.optim.momentum, c.optim.nesterov, c.optim.weight_decay) == (
      0.9,
      False,
      1e-4,
  )
  np.testing.assert_allclose(
      _lr_at_epochs(c, [0, 29.99, 30, 60, 90, 99.99]),
      [0.1, 0.1, 0.01, 0.001, 1e-4, 1e-4],
      rtol=1e-6,
  )
  plain = load_config('imagenet.py', f'{arch},gated=false')
  assert not plain.model.gated and factory.block_targets(plain) == (1.0,) * len(
      targets
  )
  assert factory.fixed_blocks(plain) == ()


def test_wide_recipe(load_config):
  c = load_config('wide_cifar10.py')
  assert (c.model.name, c.model.depth, c.model.width, c.data.name) == (
      'wide_resnet',
      28,
      10,
      'cifar10',
  )
  assert (
      factory.num_blocks(c.model) == 12
      and factory.block_targets(c) == (0.7,) * 12
  )
  assert (c.train.batch_size, c.train.num_epochs) == (128, 200.0)
  assert c.optim.decay_fractions == (0.3, 0.6, 0.8)
  assert (c.optim.nesterov, c.optim.decay_factor, c.optim.weight_decay) == (
      True,
      0.2,
      5e-4,
  )
  assert optim.learning_rate(c) == 0.1
  # WRN-28-10 without gates has the Wide ResNet paper's 36,479,194 parameters.
  plain = load_config('wide_cifar10.py', 'gated=false')
  params = jax.eval_shape(
      lambda: factory.create_model(plain).init(
          {'params': jax.random.key(0)},
          np.zeros((1, 32, 32, 3), np.float32),
          train=False,
      )
  )
  assert sum(x.size for x in jax.tree.leaves(params['params'])) == 36_479_194


def _mock_dataset(config, monkeypatch):
  """The config's dataset; tfds ones with MOCK_EXAMPLES per split (call under mock_data)."""
  name = config.data.name
  if name in tfds_pipeline.SPLIT_SIZES:
    monkeypatch.setitem(
        tfds_pipeline.SPLIT_SIZES, name, (MOCK_EXAMPLES, MOCK_EXAMPLES)
    )
  return input_pipeline.create_dataset(config)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    'name',
    # folder.py needs a folder of images: tests/test_folder.py trains it
    [name for name in CONFIG_FILES if name != 'folder.py'],
)
def test_every_config_trains_a_step_and_evaluates_the_whole_split(
    load_config, monkeypatch, name
):
  config = load_config(name, SMALL_ARGS.get(name))
  config.train.batch_size = 8
  config.eval.batch_size = EVAL_BATCH.get(config.data.name, 16)
  config.data.image_size = TEST_IMAGE_SIZE.get(
      config.data.name, config.data.image_size
  )
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    dataset = _mock_dataset(config, monkeypatch)
    setup = trainer.setup(config, dataset, devices=jax.devices()[:1])
    state, metrics = setup.train_step(
        setup.init_state(), setup.placement.to_global(dataset.train_batch(0))
    )
    metrics = jax.device_get(metrics)
    assert metrics['count'] == 8 and np.isfinite(metrics['loss'])
    results, matrices = setup.evaluator(state, dataset)
  assert int(state.step) == 1
  for mode in config.gates.eval_modes:
    assert results[f'eval/{mode}/count'] == dataset.num_eval
    assert len(results[f'eval/{mode}/gate_rates']) == factory.num_blocks(
        config.model
    )
    assert np.isfinite(results[f'eval/{mode}/loss'])
    assert matrices[mode].shape == (
        config.model.num_classes,
        factory.num_blocks(config.model),
    )


# bfloat16 against float32, same parameters, batch and Gumbel noise. bf16 keeps
# 8 significant bits (relative rounding 2^-9 = 0.2% per operation) and
# BatchNorm renormalises every layer, so errors do not compound over depth:
# over 8 seeds the loss (about 2.4) moved by at most 5e-4 (0.02%). The bound,
# 0.005, is 10x that and 0.2% of the loss; a bf16 softmax, BatchNorm statistic
# or loss would move it by more. A gate decision that flips at its threshold
# would move the target-rate loss by up to about 0.015 at batch 16, so the
# decisions are compared first (they agree for this fixed seed).
BF16_LOSS_TOLERANCE = 0.005


@pytest.mark.timeout(300)
def test_bfloat16_step_matches_float32_step(load_config, monkeypatch):
  results = {}
  for dtype in ('float32', 'bfloat16'):
    config = load_config('cifar10.py', 'depth=8')
    config.model.dtype = dtype
    config.train.batch_size = 16
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
      dataset = _mock_dataset(config, monkeypatch)
      setup = trainer.setup(config, dataset, devices=jax.devices()[:1])
      state, metrics = setup.train_step(
          setup.init_state(), setup.placement.to_global(dataset.train_batch(0))
      )
    results[dtype] = jax.device_get(metrics)
    # Parameters and BatchNorm statistics stay float32 whatever the compute dtype.
    assert {
        x.dtype for x in jax.tree.leaves((state.params, state.batch_stats))
    } == {np.dtype('float32')}
  fp32, bf16 = results['float32'], results['bfloat16']
  np.testing.assert_array_equal(
      bf16['gates'], fp32['gates'], 'a gate decision flipped'
  )
  loss32, loss16 = fp32['loss'] / fp32['count'], bf16['loss'] / bf16['count']
  assert np.isfinite(loss16) and abs(loss16 - loss32) <= BF16_LOSS_TOLERANCE, (
      loss32,
      loss16,
  )
