"""Tests of `adanet_jax.data.augment`: CIFAR crops and flips, random-resized crop
boxes, ImageNet evaluation preprocessing."""

import numpy as np
import pytest
import tensorflow as tf

from adanet_jax.data import augment
from adanet_jax.data.augment import IMAGENET_MEAN, IMAGENET_STD


def _cifar_crops(image, seeds):
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: augment.cifar_augment(tf.constant(image), s)
  )
  return np.stack(list(ds.as_numpy_iterator()))


def test_cifar_crops_stay_in_bounds_and_flip_about_half_the_time():
  # 0 = padding
  image = np.arange(1, 32 * 32 * 3 + 1, dtype=np.int32).reshape(32, 32, 3)
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  candidates = {}
  for dy in range(9):
    for dx in range(9):
      crop = padded[dy : dy + 32, dx : dx + 32]
      candidates[crop.tobytes()] = (dy, dx, False)
      candidates[crop[:, ::-1].tobytes()] = (dy, dx, True)
  seeds = np.stack([np.zeros(1000, np.int64), np.arange(1000)], axis=1)
  found = [candidates.get(out.tobytes()) for out in _cifar_crops(image, seeds)]
  # every output is a 32 x 32 window of the padded image, or its mirror
  assert None not in found
  dys, dxs, flips = zip(*found)
  assert set(dys) == set(dxs) == set(range(9))
  assert 450 <= sum(flips) <= 550  # 1000 fair coins: 500 +- 16 (1 sd)


@pytest.mark.parametrize(
    'height,width', [(375, 500), (500, 375), (224, 224), (6, 18)]
)
def test_random_resized_crop_boxes_stay_in_bounds(height, width):
  boxes = np.stack(
      [
          augment.sample_crop_box(
              height, width, tf.constant([3, s], tf.int64)
          ).numpy()
          for s in range(200)
      ]
  )
  y, x, h, w = boxes.T
  assert np.all((y >= 0) & (x >= 0) & (h >= 1) & (w >= 1))
  assert np.all((y + h <= height) & (x + w <= width))
  if min(height, width) >= 224:  # rounding to whole pixels is negligible
    assert len(set(map(tuple, boxes))) == 200  # really random
    assert np.all(h * w >= 0.08 * height * width * 0.99)
    assert np.all((w / h >= 3 / 4 * 0.98) & (w / h <= 4 / 3 * 1.02))


def test_random_resized_crop_falls_back_to_the_centre_crop():
  # 10 x 1000: no box of >= 8% of the area with ratio in [3/4, 4/3] fits, so
  # torchvision's fallback: the full height, width 10 x 4/3, centred.
  for s in range(20):
    box = augment.sample_crop_box(10, 1000, tf.constant([0, s], tf.int64))
    assert box.numpy().tolist() == [0, 493, 10, 13]


def _jpeg(height, width, colour):
  image = np.broadcast_to(np.array(colour, np.uint8), (height, width, 3))
  return tf.io.encode_jpeg(image, quality=100)


@pytest.mark.parametrize(
    'height,width', [(300, 400), (500, 375), (6, 18), (256, 256)]
)
def test_imagenet_eval_preprocessing_is_deterministic_and_normalised(
    height, width
):
  encoded = _jpeg(height, width, (128, 64, 200))
  first = augment.imagenet_eval_image(encoded, 224).numpy()
  second = augment.imagenet_eval_image(encoded, 224).numpy()
  np.testing.assert_array_equal(first, second)
  assert first.shape == (224, 224, 3) and first.dtype == np.float32
  expected = (
      np.array([128, 64, 200]) / 255 - np.array(IMAGENET_MEAN)
  ) / np.array(IMAGENET_STD)
  # JPEG colour rounding
  np.testing.assert_allclose(
      first,
      np.broadcast_to(expected, first.shape),
      atol=3 / 255 / min(IMAGENET_STD),
  )


def test_imagenet_eval_resizes_the_shorter_side_then_crops_the_centre():
  # A 300 x 400 image whose left and right 50 columns are black: resized to
  # 256 x 341 (torchvision's int(256 * 400 / 300)), the centre 224 x 224 crop
  # starts at column 58 and sees no black border.
  image = np.full((300, 400, 3), 255, np.uint8)
  image[:, :50] = image[:, 350:] = 0
  out = augment.resize_shorter_and_centre_crop(tf.constant(image), 224).numpy()
  assert out.shape == (224, 224, 3)
  assert out.min() > 250
