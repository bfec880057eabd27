"""Test set-up: 8 virtual CPU devices, set before JAX starts."""

import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import pytest  # noqa: E402

from adanet_jax import config_io  # noqa: E402


@pytest.fixture
def load_config():
  """Loads `configs/<name>` with an optional argument string."""
  def load(name, arg=None):
    return config_io.load_config_file(os.path.join(REPO, 'configs', name), arg)
  return load
