"""`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
classes, no download), the offline dataset of the main job and the tests.

The split is fixed: images whose index is a multiple of 5 are the test set
(360 images), the other 1,437 the training set. The data order of epoch e is
a permutation seeded by (seed, e), so a batch is a function of (seed, step).
"""

import dataclasses
import importlib.util
import os

import jax
import ml_collections
import numpy as np

from adanet_jax.data import batches

# Images whose index is a multiple of this are the test set.
DIGITS_TEST_EVERY = 5


@dataclasses.dataclass
class ArrayDataset:
  """An in-memory dataset, sharded over processes by example."""

  train_images: np.ndarray
  train_labels: np.ndarray
  eval_images: np.ndarray
  eval_labels: np.ndarray
  num_classes: int
  batch_size: int  # global
  eval_batch_size: int  # global
  seed: int
  name: str = 'digits'  # in messages

  def __post_init__(self):
    batches.check_batch_sizes(
        self.batch_size,
        self.eval_batch_size,
        self.num_train,
        jax.process_count(),
        self.name,
    )

  @property
  def num_train(self) -> int:
    return len(self.train_labels)

  @property
  def num_eval(self) -> int:
    return len(self.eval_labels)

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.train_images.shape[1:]

  @property
  def steps_per_epoch(self) -> int:
    """Full batches per epoch; each epoch is a fresh permutation, so the
    examples left over at the end of one epoch come first-class in others."""
    return self.num_train // self.batch_size

  def train_batch(self, step: int) -> dict:
    epoch, index = divmod(step, self.steps_per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(
        self.num_train
    )
    ids = order[index * self.batch_size : (index + 1) * self.batch_size]
    ids = batches.process_share(ids)
    return {'image': self.train_images[ids], 'label': self.train_labels[ids]}

  def eval_batches(self):
    b = self.eval_batch_size
    for start in range(0, self.num_eval, b):
      batch = batches.pad_and_mask(
          {
              'image': self.eval_images[start : start + b],
              'label': self.eval_labels[start : start + b],
          },
          b,
      )
      yield {k: batches.process_share(v) for k, v in batch.items()}


def _digits_file() -> str:
  """scikit-learn's bundled digits table (one image of 64 pixels and its
  label a row), found without importing scikit-learn, whose import would
  slow every start of a run."""
  package = importlib.util.find_spec('sklearn').submodule_search_locations[0]
  return os.path.join(package, 'datasets', 'data', 'digits.csv.gz')


def load_digits(config: ml_collections.ConfigDict) -> ArrayDataset:
  """scikit-learn's digits as 8x8x1 float32 images, standardised with the
  training set's mean and standard deviation."""
  table = np.loadtxt(_digits_file(), delimiter=',', dtype=np.float64)
  images = table[:, :-1].reshape(-1, 8, 8).astype(np.float32)[..., None] / 16.0
  labels = table[:, -1].astype(np.int32)
  test = np.arange(len(labels)) % DIGITS_TEST_EVERY == 0
  mean, std = images[~test].mean(), images[~test].std()
  images = (images - mean) / std
  return ArrayDataset(
      images[~test],
      labels[~test],
      images[test],
      labels[test],
      num_classes=10,
      batch_size=config.train.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
  )
