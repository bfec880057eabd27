"""Tests of `adanet_jax.data.batches`: padding with a mask, process shares, checks."""

import numpy as np
import pytest

from adanet_jax.data import batches
from adanet_jax.errors import ConfigError


def test_pad_and_mask():
  batch = {
      'image': np.ones((3, 2, 2, 1), np.float32),
      'label': np.array([4, 5, 6], np.int32),
  }
  out = batches.pad_and_mask(batch, 5)
  assert out['mask'].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
  assert (
      out['label'].tolist() == [4, 5, 6, 0, 0]
      and out['label'].dtype == np.int32
  )
  assert out['image'].shape == (5, 2, 2, 1) and out['image'][3:].sum() == 0
  full = batches.pad_and_mask(batch, 3)
  assert full['mask'].tolist() == [1.0] * 3 and full['label'] is batch['label']
  with pytest.raises(ValueError, match='a batch of 3 does not fit in 2'):
    batches.pad_and_mask(batch, 2)


def test_process_share(monkeypatch):
  x = np.arange(8)
  monkeypatch.setattr(batches.jax, 'process_count', lambda: 2)
  shares = []
  for i in range(2):
    monkeypatch.setattr(batches.jax, 'process_index', lambda i=i: i)
    shares.append(batches.process_share(x).tolist())
  assert shares == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_batch_size_checks():
  batches.check_batch_sizes(64, 120, 1437, 2, 'digits')
  with pytest.raises(
      ConfigError,
      match='train.batch_size=2048 is larger than the 1437 training '
      'examples of digits',
  ):
    batches.check_batch_sizes(2048, 120, 1437, 1, 'digits')
  with pytest.raises(
      ConfigError,
      match='eval.batch_size=121 is not divisible by the 2 processes',
  ):
    batches.check_batch_sizes(64, 121, 1437, 2, 'digits')
