"""Tests of `adanet_jax.data.digits`: the fixed split, the data order as a function
of (seed, step), and evaluation batches that hold every test image once."""

from conftest import tiny_config
import numpy as np

from adanet_jax.data import digits


def test_split_and_order():
  config = tiny_config()
  data = digits.load_digits(config)
  assert (data.num_train, data.num_eval, data.image_shape) == (
      1437,
      360,
      (8, 8, 1),
  )
  assert data.steps_per_epoch == 1437 // 32
  # step 45: epoch 1, batch 1
  first, again = data.train_batch(45), data.train_batch(45)
  np.testing.assert_array_equal(first['image'], again['image'])
  order = np.random.default_rng([config.seed, 1]).permutation(1437)[32:64]
  np.testing.assert_array_equal(first['label'], data.train_labels[order])


def test_eval_batches_hold_every_image_once():
  # 360 = 7 x 48 + 24: the last batch is padded
  config = tiny_config(eval__batch_size=48)
  data = digits.load_digits(config)
  batches = list(data.eval_batches())
  assert [int(b['mask'].sum()) for b in batches] == [48] * 7 + [24]
  assert {b['image'].shape for b in batches} == {(48, 8, 8, 1)}
  seen = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(seen, data.eval_labels)
