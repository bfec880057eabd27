"""Image decoding and augmentation on tf.data, as the reference code.

CIFAR: 4-pixel zero padding, a random 32x32 crop, a horizontal flip half the
time, per-channel normalisation. ImageNet: random-resized crop (scale 0.08-1,
aspect ratio 3/4-4/3, torchvision's sampling) and flip for training; for
evaluation a resize of the shorter side to 256/224 x the image size and a
centre crop. Random choices use TF's stateless ops, so an image's
augmentation is a function of the seed it is given.
"""

import math

import tensorflow as tf

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_PAD = 4
IMAGENET_CROP_SCALE, IMAGENET_CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
# evaluation: shorter side to this x image size, centre crop
IMAGENET_RESIZE_RATIO = 256 / 224
AUGMENT_STREAM = 1  # keeps augmentation seeds apart from other uses of the seed


def example_seed(seed: int, position) -> tf.Tensor:
  """The stateless seed that augments the training example at `position`
  of the global stream (step x global batch + index in the global batch),
  so an example's augmentation is a function of (seed, step) alone."""
  return tf.random.experimental.stateless_fold_in(
      tf.constant([seed, AUGMENT_STREAM], tf.int64), position
  )


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  """uint8 (or 0-255 float) pixels -> float32 (x / 255 - mean) / std per channel."""
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Horizontal flip with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def cifar_augment(
    image: tf.Tensor, seed: tf.Tensor, pad: int = CIFAR_PAD
) -> tf.Tensor:
  """Zero-pads by `pad`, crops back to the input size at a random offset, and
  flips horizontally half the time (torchvision's RandomCrop(32, padding=4) +
  RandomHorizontalFlip). Works on any dtype; `seed` is a stateless seed."""
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2)
  )
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  offset = tf.random.stateless_uniform(
      [2], crop_seed, 0, 2 * pad + 1, dtype=tf.int32
  )
  image = tf.slice(padded, [offset[0], offset[1], 0], [height, width, -1])
  return _flip(image, flip_seed)


def sample_crop_box(
    height,
    width,
    seed: tf.Tensor,
    scale=IMAGENET_CROP_SCALE,
    ratio=IMAGENET_CROP_RATIO,
    attempts: int = 10,
) -> tf.Tensor:
  """torchvision's RandomResizedCrop box: [y, x, h, w] (int32).

  Up to `attempts` draws of an area fraction uniform in `scale` and an aspect
  ratio (w / h) log-uniform in `ratio`; the first box that fits wins, at a
  uniform position. If none fits, the centre crop with the aspect ratio
  clamped to `ratio` (torchvision's fallback).
  """
  area_seed, ratio_seed, y_seed, x_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4)
  )
  h_img, w_img = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  area = (
      h_img * w_img * tf.random.stateless_uniform([attempts], area_seed, *scale)
  )
  aspect = tf.exp(
      tf.random.stateless_uniform(
          [attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1])
      )
  )
  w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
  # 0 if none fits
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

  def fitted():
    hh, ww = h[first], w[first]
    y = tf.cast(
        tf.random.stateless_uniform([], y_seed)
        * tf.cast(height - hh + 1, tf.float32),
        tf.int32,
    )
    x = tf.cast(
        tf.random.stateless_uniform([], x_seed)
        * tf.cast(width - ww + 1, tf.float32),
        tf.int32,
    )
    return tf.stack(
        [tf.minimum(y, height - hh), tf.minimum(x, width - ww), hh, ww]
    )

  def centre():
    in_ratio = w_img / h_img
    ww = tf.where(in_ratio > ratio[1], tf.round(h_img * ratio[1]), w_img)
    hh = tf.where(in_ratio < ratio[0], tf.round(w_img / ratio[0]), h_img)
    hh, ww = tf.cast(hh, tf.int32), tf.cast(ww, tf.int32)
    return tf.stack([(height - hh) // 2, (width - ww) // 2, hh, ww])

  return tf.cond(tf.reduce_any(fits), fitted, centre)


def imagenet_train_image(
    encoded: tf.Tensor, seed: tf.Tensor, size: int
) -> tf.Tensor:
  """JPEG bytes -> random-resized crop `size`, flip, normalised float32."""
  box_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2)
  )
  shape = tf.image.extract_jpeg_shape(encoded)
  box = sample_crop_box(shape[0], shape[1], box_seed)
  image = tf.image.decode_and_crop_jpeg(encoded, box, channels=3)
  image = tf.image.resize(
      image, [size, size], method='bilinear', antialias=True
  )
  return normalize(_flip(image, flip_seed), IMAGENET_MEAN, IMAGENET_STD)


def resize_shorter_and_centre_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Shorter side to round(size x 256/224) (bilinear), then the centre
  `size` x `size` crop: torchvision's Resize(256) + CenterCrop(224)."""
  resize = int(round(size * IMAGENET_RESIZE_RATIO))
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = resize / tf.reduce_min(shape)
  # torchvision: the shorter side is exactly `resize`, the longer int(resize x long / short).
  new = tf.maximum(tf.cast(tf.floor(shape * scale + 1e-3), tf.int32), resize)
  image = tf.image.resize(image, new, method='bilinear', antialias=True)
  top = tf.cast(tf.round(tf.cast(new[0] - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(new[1] - size, tf.float32) / 2), tf.int32)
  return tf.slice(image, [top, left, 0], [size, size, 3])


def imagenet_eval_image(encoded: tf.Tensor, size: int) -> tf.Tensor:
  """JPEG bytes -> resize + centre crop `size`, normalised float32 (deterministic)."""
  image = tf.image.decode_jpeg(encoded, channels=3)
  return normalize(
      resize_shorter_and_centre_crop(image, size), IMAGENET_MEAN, IMAGENET_STD
  )


def cifar_train_image(encoded: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """PNG bytes -> pad, crop, flip, normalised float32."""
  return normalize(
      cifar_augment(tf.io.decode_png(encoded, channels=3), seed),
      CIFAR_MEAN,
      CIFAR_STD,
  )


def cifar_eval_image(encoded: tf.Tensor) -> tf.Tensor:
  """PNG bytes -> normalised float32 (deterministic)."""
  return normalize(tf.io.decode_png(encoded, channels=3), CIFAR_MEAN, CIFAR_STD)
