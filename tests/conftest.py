"""Test set-up: 8 virtual CPU devices, set before JAX starts; a SLURM cluster
on localhost for the tests that need one."""

import os
import socket
import subprocess
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


SLURM_CLUSTER_SCRIPT = os.path.join(REPO, 'tests', 'slurm', 'cluster.sh')


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='session')
def slurm_cluster(tmp_path_factory):
  """A single-node SLURM cluster on localhost (munged, slurmctld, slurmd from
  tests/slurm/cluster.sh), stopped after the session.

  Yields the environment for its clients (`SLURM_CONF` set). Where it cannot
  start (no slurm-wlm / munge, not root), the test is skipped with the reason
  in one line; on CI (CI=true) it fails instead.
  """
  directory = tmp_path_factory.mktemp('slurm')
  env = dict(os.environ, SLURM_TEST_CTLD_PORT=str(_free_port()),
             SLURM_TEST_SLURMD_PORT=str(_free_port()))
  try:
    out = subprocess.run(['bash', SLURM_CLUSTER_SCRIPT, 'start', str(directory)], env=env,
                         capture_output=True, text=True, timeout=120)
    reason = (out.stderr.strip().splitlines() or [f'exit status {out.returncode}'])[-1]
  except (OSError, subprocess.TimeoutExpired) as e:
    out, reason = None, str(e)
  if out is None or out.returncode != 0:
    subprocess.run(['bash', SLURM_CLUSTER_SCRIPT, 'stop', str(directory)], check=False)
    message = f'no SLURM cluster: {reason}'
    if os.environ.get('CI') == 'true':
      pytest.fail(message)
    pytest.skip(message)
  try:
    yield dict(os.environ, SLURM_CONF=str(directory / 'slurm.conf'))
  finally:
    subprocess.run(['bash', SLURM_CLUSTER_SCRIPT, 'stop', str(directory)], check=False)
