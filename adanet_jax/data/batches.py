"""Batches as every pipeline and `predict` make them: this process's share of
a global batch, the last batch padded to full size with a mask, and the
checks of batch sizes against the data and the processes.
"""

import jax
import numpy as np

from adanet_jax.errors import ConfigError


def pad_and_mask(batch: dict, size: int) -> dict:
  """Pads every array of `batch` (same length on axis 0) with zeros to `size`
  rows and adds `mask`: 1.0 on real rows, 0.0 on padding.

  The padding keeps shapes (and so compilations) fixed; whoever sums over a
  batch multiplies by the mask, whoever returns rows drops the padded ones.
  """
  n = len(next(iter(batch.values())))
  if n > size:
    raise ValueError(f'a batch of {n} does not fit in {size}')
  padded = {
      k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
      if n < size
      else v
      for k, v in batch.items()
  }
  return {**padded, 'mask': (np.arange(size) < n).astype(np.float32)}


def process_share(x: np.ndarray) -> np.ndarray:
  """This process's contiguous slice of a global batch."""
  per = len(x) // jax.process_count()
  return x[jax.process_index() * per : (jax.process_index() + 1) * per]


def check_batch_sizes(
    batch_size: int,
    eval_batch_size: int,
    num_train: int,
    process_count: int,
    name: str,
) -> None:
  """Refuses global batches larger than the data or not divisible by the processes."""
  if batch_size > num_train:
    raise ConfigError(
        f'train.batch_size={batch_size} is larger than the {num_train} '
        f'training examples of {name}'
    )
  for field, size in (
      ('train.batch_size', batch_size),
      ('eval.batch_size', eval_batch_size),
  ):
    if size % process_count:
      raise ConfigError(
          f'{field}={size} is not divisible by the {process_count} processes'
      )
