"""Input pipelines behind one interface.

A dataset gives the trainer:
  - `train_batch(step)`: this process's share of the global training batch of
    optimizer step `step` ({'image', 'label'} numpy arrays). The data order is
    a function of (seed, step) alone, so a resumed run sees exactly the
    batches an uninterrupted run sees.
  - `eval_batches()`: this process's share of every evaluation batch, the last
    one padded, with a `mask` that is 1 on real examples and 0 on padding.
  - `num_train`, `num_eval`, `num_classes`, `image_shape`, `steps_per_epoch`.

`digits` is scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
classes, no download): the offline dataset of the main job and the tests.
"""

import dataclasses

import jax
import ml_collections
import numpy as np

from adanet_jax.config_base import ConfigError

DATASETS = ('digits', 'cifar10', 'cifar100', 'imagenet2012')

# The fixed split of `digits`: images whose index is a multiple of 5 are the
# test set (360 images), the other 1,437 the training set.
DIGITS_TEST_EVERY = 5


@dataclasses.dataclass
class ArrayDataset:
  """An in-memory dataset, sharded over processes by example."""
  train_images: np.ndarray
  train_labels: np.ndarray
  eval_images: np.ndarray
  eval_labels: np.ndarray
  num_classes: int
  batch_size: int        # global
  eval_batch_size: int   # global
  seed: int

  def __post_init__(self):
    check_batch_sizes(self.batch_size, self.eval_batch_size, self.num_train,
                      jax.process_count(), 'digits')

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
    order = np.random.default_rng([self.seed, epoch]).permutation(self.num_train)
    ids = order[index * self.batch_size:(index + 1) * self.batch_size]
    ids = _process_share(ids)
    return {'image': self.train_images[ids], 'label': self.train_labels[ids]}

  def eval_batches(self):
    b = self.eval_batch_size
    for start in range(0, self.num_eval, b):
      ids = np.arange(start, start + b)
      mask = ids < self.num_eval
      ids = np.where(mask, ids, 0)
      ids, mask = _process_share(ids), _process_share(mask)
      yield {'image': self.eval_images[ids], 'label': self.eval_labels[ids],
             'mask': mask.astype(np.float32)}


def check_batch_sizes(batch_size: int, eval_batch_size: int, num_train: int,
                      process_count: int, name: str) -> None:
  """Refuses global batches larger than the data or not divisible by the processes."""
  if batch_size > num_train:
    raise ConfigError(f'train.batch_size={batch_size} is larger than the {num_train} '
                      f'training examples of {name}')
  for field, size in (('train.batch_size', batch_size), ('eval.batch_size', eval_batch_size)):
    if size % process_count:
      raise ConfigError(f'{field}={size} is not divisible by the {process_count} processes')


def _process_share(x: np.ndarray) -> np.ndarray:
  """This process's contiguous slice of a global batch."""
  per = len(x) // jax.process_count()
  return x[jax.process_index() * per:(jax.process_index() + 1) * per]


def load_digits(config: ml_collections.ConfigDict) -> ArrayDataset:
  """scikit-learn's digits as 8x8x1 float32 images, standardised with the
  training set's mean and standard deviation."""
  from sklearn import datasets as sk_datasets  # pylint: disable=import-outside-toplevel
  digits = sk_datasets.load_digits()
  images = digits.images.astype(np.float32)[..., None] / 16.0
  labels = digits.target.astype(np.int32)
  test = np.arange(len(labels)) % DIGITS_TEST_EVERY == 0
  mean, std = images[~test].mean(), images[~test].std()
  images = (images - mean) / std
  return ArrayDataset(images[~test], labels[~test], images[test], labels[test],
                      num_classes=10, batch_size=config.train.batch_size,
                      eval_batch_size=config.eval.batch_size, seed=config.seed)


def create_dataset(config: ml_collections.ConfigDict):
  """The dataset `config.data.name` names, checked against the model config."""
  name = config.data.name
  if name not in DATASETS:
    raise ConfigError(f'data.name={name!r} is unknown; supported datasets: '
                      f'{", ".join(DATASETS)}')
  if name == 'digits':
    dataset = load_digits(config)
  else:
    from adanet_jax import tfds_pipeline  # pylint: disable=import-outside-toplevel
    dataset = tfds_pipeline.create_dataset(config)
  want = (config.data.image_size, config.data.image_size, config.data.channels)
  if dataset.image_shape != want:
    raise ConfigError(f'data.image_size/data.channels give {want} but {name} images are '
                      f'{dataset.image_shape}')
  if dataset.num_classes != config.model.num_classes:
    raise ConfigError(f'model.num_classes={config.model.num_classes} but {name} has '
                      f'{dataset.num_classes} classes')
  return dataset
