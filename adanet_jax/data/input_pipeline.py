"""Input pipelines behind one interface.

A dataset gives the trainer:
  - `train_batch(step)`: this process's share of the global training batch of
    optimizer step `step` ({'image', 'label'} numpy arrays). The data order is
    a function of (seed, step) alone, so a resumed run sees exactly the
    batches an uninterrupted run sees.
  - `eval_batches()`: this process's share of every evaluation batch, the last
    one padded, with a `mask` that is 1 on real examples and 0 on padding.
  - `num_train`, `num_eval`, `num_classes`, `image_shape`, `steps_per_epoch`.

The datasets: `digits` (`adanet_jax.data.digits`, offline), `folder` (your own
images, `adanet_jax.data.folder`) and the tfds datasets `cifar10`, `cifar100`,
`imagenet2012` (`adanet_jax.data.tfds_pipeline`). Padding and process shares:
`adanet_jax.data.batches`.
"""

from typing import Iterator, Protocol

import ml_collections
import numpy as np

from adanet_jax.data import digits, folder
from adanet_jax.errors import ConfigError

DATASETS = ('digits', 'folder', 'cifar10', 'cifar100', 'imagenet2012')


class Dataset(Protocol):
  """What the trainer, evaluation and `predict` need of a dataset."""

  num_train: int
  num_eval: int
  num_classes: int
  image_shape: tuple[int, ...]
  steps_per_epoch: int

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's share of the global batch of optimizer step `step`."""

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of every evaluation batch, with `mask`."""


def create_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """The dataset `config.data.name` names, checked against the model config."""
  name = config.data.name
  if name not in DATASETS:
    raise ConfigError(
        f'data.name={name!r} is unknown; supported datasets: '
        f'{", ".join(DATASETS)}'
    )
  if name == 'digits':
    dataset = digits.load_digits(config)
  elif name == 'folder':
    dataset = folder.load_folder(config)
  else:
    from adanet_jax.data import tfds_pipeline  # pylint: disable=import-outside-toplevel

    dataset = tfds_pipeline.create_dataset(config)
  want = (config.data.image_size, config.data.image_size, config.data.channels)
  if dataset.image_shape != want:
    raise ConfigError(
        f'data.image_size/data.channels give {want} but {name} images are '
        f'{dataset.image_shape}'
    )
  if dataset.num_classes != config.model.num_classes:
    raise ConfigError(
        f'model.num_classes={config.model.num_classes} but {name} has '
        f'{dataset.num_classes} classes'
    )
  return dataset
