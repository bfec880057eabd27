"""Benchmark of the input pipelines (not a test): images/s each pipeline
delivers on this machine, beside the images/s the train step of the same
config consumes.

  python -m experiments.benchmark_input [--configs=cifar10.py,imagenet.py] \
      [--batch=128] [--steps=2] [--pipeline_batches=30]

(`--batch` and `--steps` are the flags of `experiments/benchmark_step.py`,
whose `benchmark` times the step.)

The real CIFAR and ImageNet sets cannot be downloaded here, so the tfds
pipelines read `tfds.testing.mock_data` with realistic pre-encoded images
(CIFAR: random 32x32 PNGs; ImageNet: 500x375 JPEGs of smooth random content,
the typical ImageNet resolution): decoding, augmentation, batching and the
tf.data machinery are measured, reading TFRecords from disk is not. Train
rates are steady state: the first batches (shuffle buffer fill) are not
timed. The train step is timed by `experiments/benchmark_step.py`'s
`benchmark` at the same batch (ImageNet: `--imagenet_step_batch`, default 32,
for memory), on JAX's default device.
"""

import os
import time

from absl import app, flags
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from adanet_jax import config_lib
from adanet_jax.data import input_pipeline, tfds_pipeline
from adanet_jax.runtime import jax_setup
from adanet_jax.train import checks
from experiments.benchmark_step import benchmark  # defines --batch and --steps

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIGS = flags.DEFINE_list(
    'configs',
    ['digits.py', 'cifar10.py', 'cifar100.py', 'imagenet.py'],
    'Config files under configs/ (file.py or file.py:arg).',
)
_BATCHES = flags.DEFINE_integer(
    'pipeline_batches', 30, 'Timed pipeline batches (after 3 ' 'untimed ones).'
)
_IMAGENET_STEP_BATCH = flags.DEFINE_integer(
    'imagenet_step_batch',
    32,
    'Batch of the ImageNet train step: at 128 the CPU step of '
    'ResNet-50 needs about 20 GB (it was killed for memory on a 23 GB machine).',
)
_POOL = 256  # distinct encoded images the mock splits cycle through
_WARMUP = 3


def _mock_images(family: str) -> list[bytes]:
  rng = np.random.default_rng(0)
  if family == 'cifar':
    return [
        tf.io.encode_png(rng.integers(0, 256, (32, 32, 3), np.uint8)).numpy()
        for _ in range(_POOL)
    ]
  images = []
  # smooth content (JPEG size and decode work like a photo's)
  for _ in range(_POOL):
    coarse = rng.integers(0, 256, (12, 16, 3)).astype(np.float32)
    image = tf.image.resize(coarse[None], (375, 500), method='bicubic')[0]
    image = image + rng.normal(0, 8, image.shape)
    images.append(
        tf.io.encode_jpeg(
            tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90
        ).numpy()
    )
  return images


def _mock_as_dataset(pools: dict):
  """`_as_dataset` of mock_data: the pool of encoded images, repeated to the
  split size of SPLIT_SIZES, with labels 0, 1, 2, ..."""

  def as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
    del decoders, read_config, kwargs
    name = builder.name
    size = tfds_pipeline.SPLIT_SIZES[name][
        0 if str(split).startswith('train') else 1
    ]
    classes = tfds_pipeline.SPECS[name].num_classes
    images = tf.data.Dataset.from_tensor_slices(pools[name]).repeat()
    labels = tf.data.Dataset.range(size).map(lambda i: i % classes)
    return tf.data.Dataset.zip({'image': images, 'label': labels}).take(size)

  return as_dataset


def _rate(batches, batch_size: int, count: int) -> float:
  """Images/s over `count` batches after _WARMUP untimed ones."""
  for _ in range(_WARMUP):
    next(batches)
  t0 = time.perf_counter()
  for _ in range(count):
    next(batches)
  return batch_size * count / (time.perf_counter() - t0)


def _eval_batches_forever(dataset):
  while True:
    yield from dataset.eval_batches()


def pipeline_rates(config, batches: int) -> tuple[float, float]:
  """(train, eval) images/s of the config's pipeline at its batch sizes."""
  dataset = input_pipeline.create_dataset(config)
  train = iter(dataset.train_batch(step) for step in range(10**9))
  return (
      _rate(train, config.train.batch_size, batches),
      _rate(_eval_batches_forever(dataset), config.eval.batch_size, batches),
  )


def main(argv):
  del argv
  jax_setup.enable_compilation_cache()
  print(
      f'input pipelines vs train step on this machine: {os.cpu_count()} CPU cores, JAX '
      f'{jax.default_backend()} with {jax.device_count()} device(s), batch {FLAGS.batch}; '
      '"load": 1-minute load average of the machine after each row, this benchmark '
      '(which keeps the cores busy) and any other users included'
  )
  print(
      'data: digits is the real data set; cifar10, cifar100 and imagenet2012 are MOCK data '
      '(tfds.testing.mock_data; the real sets are not available offline) with realistic '
      'encoded images: CIFAR 32x32 PNGs, ImageNet 500x375 JPEGs. Decoding and augmentation '
      'are measured, TFRecord reading from disk is not.'
  )
  pools = {
      name: _mock_images(spec.family)
      for name, spec in tfds_pipeline.SPECS.items()
  }
  print(
      f'{"config":<24} {"data":<13} {"pipeline train img/s":>21} {"pipeline eval img/s":>20} '
      f'{"train step img/s":>17}  step'
  )
  with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset(pools)):
    for name in _CONFIGS.value:
      config = checks.validate(
          config_lib.load_config(os.path.join(REPO, 'configs', name))
      )
      config.train.batch_size = FLAGS.batch
      config.eval.batch_size = FLAGS.batch
      train_rate, eval_rate = pipeline_rates(config, _BATCHES.value)
      step_batch = (
          _IMAGENET_STEP_BATCH.value
          if config.data.name == 'imagenet2012'
          else FLAGS.batch
      )
      config.train.batch_size = step_batch
      step = benchmark(config, step_batch, FLAGS.steps)
      print(
          f'{name:<24} {config.data.name:<13} {train_rate:>21,.0f} {eval_rate:>20,.0f} '
          f'{step["images_per_s"]:>17,.1f}  {config.model.name}-{config.model.depth} '
          f'{config.model.dtype} batch {step_batch}, {step["step_s"]:.2f} s/step, compile '
          f'{step["compile_s"]:.0f} s; load {os.getloadavg()[0]:.1f}',
          flush=True,
      )


if __name__ == '__main__':
  app.run(main)
