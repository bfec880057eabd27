"""The tfds pipelines under `tfds.testing.mock_data`: shapes, value ranges and
normalisation, data order a function of (seed, step), evaluation coverage,
per-process shares, augmentation bounds, and the errors for missing data."""

import contextlib
import json
import os

from conftest import run_module
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from adanet_jax.data import input_pipeline, tfds_pipeline
from adanet_jax.data.augment import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from adanet_jax.errors import ConfigError
from adanet_jax.train import trainer


@pytest.fixture
def mock(monkeypatch):
  """Enters mock_data with `n` examples per split, SPLIT_SIZES saying `sizes` (default n, n)."""
  with contextlib.ExitStack() as stack:

    def enter(name, n, sizes=None):
      monkeypatch.setitem(tfds_pipeline.SPLIT_SIZES, name, sizes or (n, n))
      stack.enter_context(tfds.testing.mock_data(num_examples=n))

    yield enter


def _dataset(
    name, batch_size=8, eval_batch_size=16, seed=0, image_size=32, **kwargs
):
  return tfds_pipeline.TfdsDataset(
      name,
      batch_size=batch_size,
      eval_batch_size=eval_batch_size,
      seed=seed,
      image_size=image_size,
      **kwargs,
  )


def _raw(name, split):
  """The mock split as stored: uint8 images and labels, in order."""
  examples = list(tfds.as_numpy(tfds.builder(name).as_dataset(split=split)))
  return [e['image'] for e in examples], np.array(
      [e['label'] for e in examples]
  )


def _normalised_bounds(mean, std):
  return (0 - np.array(mean)) / np.array(std), (1 - np.array(mean)) / np.array(
      std
  )


@pytest.mark.parametrize('name,classes', [('cifar10', 10), ('cifar100', 100)])
def test_cifar_batches_shapes_ranges_normalisation_and_coverage(
    mock, name, classes
):
  mock(name, 20)
  ds = _dataset(name)
  assert (
      ds.num_train,
      ds.num_eval,
      ds.num_classes,
      ds.image_shape,
      ds.steps_per_epoch,
  ) == (20, 20, classes, (32, 32, 3), 2)
  batch = ds.train_batch(0)
  assert (
      batch['image'].shape == (8, 32, 32, 3)
      and batch['image'].dtype == np.float32
  )
  assert batch['label'].dtype == np.int32 and batch['label'].min() >= 0
  assert batch['label'].max() < classes
  low, high = _normalised_bounds(CIFAR_MEAN, CIFAR_STD)
  assert np.all(batch['image'].min(axis=(0, 1, 2)) >= low - 1e-6)
  assert np.all(batch['image'].max(axis=(0, 1, 2)) <= high + 1e-6)
  # Evaluation: every test image once, in order, normalised exactly; the
  # last batch padded with zero images and masked.
  images, labels = _raw(name, 'test')
  batches = list(ds.eval_batches())
  assert [b['mask'].tolist() for b in batches] == [
      [1.0] * 16,
      [1.0] * 4 + [0.0] * 12,
  ]
  real = np.concatenate([b['image'][b['mask'] > 0] for b in batches])
  expected = (
      np.stack(images) / np.float32(255) - np.float32(CIFAR_MEAN)
  ) / np.float32(CIFAR_STD)
  np.testing.assert_allclose(real, expected, atol=1e-6, rtol=0)
  np.testing.assert_array_equal(
      np.concatenate([b['label'][b['mask'] > 0] for b in batches]), labels
  )
  assert not batches[1]['image'][4:].any()


def test_train_order_is_a_function_of_seed_and_step(mock):
  mock('cifar10', 24)  # 3 steps of 8 per epoch: an epoch is every example once
  straight = _dataset('cifar10')
  batches = [straight.train_batch(step) for step in range(7)]
  resumed = _dataset('cifar10')
  # jumps rebuild the iterator; the next step continues it
  for step in (
      4,
      5,
      1,
      6,
  ):
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          resumed.train_batch(step)[key], batches[step][key]
      )
  _, labels = _raw('cifar10', 'train')
  for epoch in range(2):
    epoch_labels = np.concatenate(
        [b['label'] for b in batches[3 * epoch : 3 * epoch + 3]]
    )
    np.testing.assert_array_equal(
        np.bincount(epoch_labels, minlength=10),
        np.bincount(labels, minlength=10),
    )
  # reshuffled each epoch
  assert not np.array_equal(batches[0]['label'], batches[3]['label'])
  other_seed = _dataset('cifar10', seed=1).train_batch(0)
  assert not np.array_equal(other_seed['image'], batches[0]['image'])


def test_process_shares(mock, monkeypatch):
  """Two processes: each reads its own part of every split, yields half of
  every batch and the same number of evaluation batches. (Mock data ignores
  the split it is given, so each "process" reads all 20 examples; the table
  says 40, and the split each one asks for is recorded.)"""
  mock('cifar10', 20, sizes=(40, 40))
  asked = []
  split_for_process = tfds.split_for_jax_process

  def record(split, *, process_index, process_count):
    asked.append((split, process_index, process_count))
    return split_for_process(
        split, process_index=process_index, process_count=process_count
    )

  monkeypatch.setattr(tfds, 'split_for_jax_process', record)
  shares = [
      _dataset('cifar10', process_index=i, process_count=2) for i in range(2)
  ]
  train = [s.train_batch(0) for s in shares]
  assert [t['image'].shape for t in train] == [(4, 32, 32, 3)] * 2
  # Same examples, different positions in the global batch: different augmentations.
  np.testing.assert_array_equal(train[0]['label'], train[1]['label'])
  assert not np.array_equal(train[0]['image'], train[1]['image'])
  evals = [list(s.eval_batches()) for s in shares]
  assert [len(e) for e in evals] == [3, 3]
  assert sorted(set(asked)) == [
      ('test', 0, 2),
      ('test', 1, 2),
      ('train', 0, 2),
      ('train', 1, 2),
  ]
  assert [[b['image'].shape[0] for b in e] for e in evals] == [[8, 8, 8]] * 2
  assert sum(b['mask'].sum() for e in evals for b in e) == 40


def test_a_split_size_table_that_does_not_match_the_data_is_an_error(mock):
  mock('cifar10', 20, sizes=(20, 36))
  with pytest.raises(
      RuntimeError,
      match=r'read 20 examples, expected 36 / 1 processes: '
      r"SPLIT_SIZES\['cifar10'\] = \(20, 36\) does not match",
  ):
    list(_dataset('cifar10').eval_batches())


def test_imagenet_batches(mock):
  mock('imagenet2012', 20)
  ds = _dataset('imagenet2012', image_size=64)
  assert (ds.num_classes, ds.image_shape) == (1000, (64, 64, 3))
  batch = ds.train_batch(0)
  assert (
      batch['image'].shape == (8, 64, 64, 3)
      and batch['image'].dtype == np.float32
  )
  low, high = _normalised_bounds(IMAGENET_MEAN, IMAGENET_STD)
  assert np.all(batch['image'].min(axis=(0, 1, 2)) >= low - 1e-5)
  assert np.all(batch['image'].max(axis=(0, 1, 2)) <= high + 1e-5)
  first, second = list(ds.eval_batches()), list(ds.eval_batches())
  assert [b['mask'].sum() for b in first] == [16, 4]
  for a, b in zip(first, second):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # TF keeps off the accelerators
  assert tf.config.get_visible_devices('GPU') == []


def test_dataset_that_is_not_prepared_is_one_clear_error(load_config, tmp_path):
  config = load_config('cifar10.py')
  config.data.data_dir = str(tmp_path)
  with pytest.raises(
      ConfigError,
      match=rf'dataset cifar10 is not prepared in {tmp_path} .*'
      r'download_and_prepare',
  ):
    input_pipeline.create_dataset(config)
  config = load_config('imagenet.py')
  config.data.data_dir = str(tmp_path)
  manual = os.path.join(tmp_path, 'downloads', 'manual')
  with pytest.raises(
      ConfigError,
      match=r'imagenet2012 needs a manual download: .* put '
      r'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
      rf'into {manual}, then run',
  ):
    input_pipeline.create_dataset(config)


def test_command_line_reports_missing_data_without_traceback(tmp_path):
  out = run_module(
      'adanet_jax.main',
      '--config=configs/cifar10.py:depth=8',
      f'--workdir={tmp_path}/w',
      f'--config.data.data_dir={tmp_path}/tfds',
  )
  assert out.returncode != 0
  assert (
      f'error: dataset cifar10 is not prepared in {tmp_path}/tfds' in out.stderr
  ), out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')


@pytest.mark.timeout(300)
def test_train_and_evaluate_on_eight_devices(load_config, mock, tmp_path):
  """The whole loop on a tfds dataset: an epoch of 2 steps, its global batches
  assembled from the process's shares on 8 devices, evaluation of all 20."""
  mock('cifar10', 20)
  config = load_config('cifar10.py', 'depth=8,epochs=1')
  config.train.batch_size = 8
  config.train.sync_every_steps = 1
  config.eval.batch_size = 16
  config.gates.eval_modes = ('deterministic',)
  dataset = input_pipeline.create_dataset(config)
  final = trainer.train_and_evaluate(config, str(tmp_path), dataset)
  assert jax.device_count() == 8
  assert final['eval/deterministic/count'] == 20
  assert '2' in os.listdir(tmp_path / 'checkpoints')
  lines = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [line['step'] for line in lines if 'train/loss' in line] == [2]
