"""Tests of `adanet_jax.data.input_pipeline`: the dataset a config names, checked
against the model config."""

import pytest

from adanet_jax.data import input_pipeline
from adanet_jax.errors import ConfigError


def test_unknown_dataset_lists_the_supported_ones(load_config):
  config = load_config('cifar10.py')
  config.data.name = 'mnist'
  with pytest.raises(
      ConfigError,
      match=r"data.name='mnist' is unknown; supported datasets: "
      r'digits, folder, cifar10, cifar100, imagenet2012',
  ):
    input_pipeline.create_dataset(config)


def test_a_dataset_that_does_not_fit_the_model_is_refused(load_config):
  config = load_config('digits.py', 'depth=8')
  config.model.num_classes = 100
  with pytest.raises(
      ConfigError, match='model.num_classes=100 but digits has 10 classes'
  ):
    input_pipeline.create_dataset(config)
  config = load_config('digits.py', 'depth=8')
  config.data.image_size = 32
  with pytest.raises(
      ConfigError,
      match=r'data.image_size/data.channels give \(32, 32, 1\) but '
      r'digits images are \(8, 8, 1\)',
  ):
    input_pipeline.create_dataset(config)
