"""Test set-up and the helpers several test files share.

8 virtual CPU devices, set before JAX starts; a SLURM cluster on localhost
for the tests that need one. Test files import the plain helpers
(`from conftest import REPO, ...`); fixtures come by name.
"""

import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '')
    + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent compilation cache for the session, in-process tests and the
# entry points they start alike: a program compiled by one test is loaded by
# the next that needs it. Fresh per session, so no test depends on an old one.
os.environ.setdefault(
    'ADANET_JAX_CACHE_DIR', tempfile.mkdtemp(prefix='adanet_jax_test_xla_')
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import pytest  # noqa: E402

from adanet_jax import config_lib
from adanet_jax.model import factory
from adanet_jax.runtime import jax_setup
from adanet_jax.train import checkpoints, optim, steps, trainer
from adanet_jax.train import plan as plan_lib

jax_setup.enable_compilation_cache()


def load_repo_config(name: str, arg: str | None = None):
  """`configs/<name>` with an optional argument string (not validated, so a
  test may change it first)."""
  path = os.path.join(REPO, 'configs', name)
  return config_lib.load_config(path if arg is None else f'{path}:{arg}')


@pytest.fixture
def load_config():
  """Loads `configs/<name>` with an optional argument string."""
  return load_repo_config


def tiny_config(**overrides):
  """A depth-8 digits config of 1 epoch at batch 32 (44 steps), blocking on
  every step (multi-device CPU), logging and checkpointing every 2 steps, with
  `section__field=value` (or top-level `field=value`) overrides."""
  config = load_repo_config('digits.py', 'depth=8,epochs=1')
  config.train.batch_size = 32
  config.train.sync_every_steps = 1
  config.train.log_every_steps = 2
  config.train.eval_every_epochs = 0.0
  config.eval.batch_size = 64
  config.checkpoint.every_steps = 2
  for key, value in overrides.items():
    section, _, field = key.rpartition('__')
    (config[section] if section else config)[field] = value
  return config


def restore_state(config, workdir):
  """(step, train state) of the latest checkpoint of `workdir`, on this process."""
  checkpointer = checkpoints.Checkpointer(str(workdir), config)
  # only the state's shapes matter
  plan = plan_lib.make_plan(config, steps_per_epoch=1)
  tx, _ = optim.create_optimizer(plan.optimizer)
  abstract = steps.abstract_train_state(
      factory.create_model(config),
      tx,
      plan.image_shape,
      jax.sharding.SingleDeviceSharding(jax.devices()[0]),
  )
  step, state = checkpointer.latest_step(), checkpointer.restore(abstract)
  checkpointer.close()
  return step, state


class Interrupted(Exception):
  """What `StopAt` raises: the process "killed" mid-run."""


class StopAt:
  """A dataset whose process is "killed" (`Interrupted`) when batch `stop`
  is read, for resume tests."""

  def __init__(self, dataset, stop):
    self.dataset, self.stop = dataset, stop

  def __getattr__(self, name):
    return getattr(self.dataset, name)

  def train_batch(self, step):
    if step == self.stop:
      raise Interrupted(step)
    return self.dataset.train_batch(step)


def snapshot(root) -> dict:
  """{path: (size, modification time)} of everything under `root`: equal
  before and after means nothing was created or changed."""
  return {
      os.path.join(r, p): (
          os.path.getsize(os.path.join(r, p)),
          os.path.getmtime(os.path.join(r, p)),
      )
      for r, ds, ps in os.walk(root)
      for p in ps + ds
  }


def run_module(module: str, *args: str, timeout: float = 300, env=None):
  """`python -m <module> <args>` from the repository root; the CompletedProcess."""
  return subprocess.run(
      [sys.executable, '-m', module, *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=timeout,
      env=env,
  )


def train_tiny_run(basetemp, name: str, gated: bool = True) -> str:
  """Trains a depth-8 digits model for one epoch (22 steps) on all devices.

  Trained once per test session, whichever pytest-xdist worker asks first
  (the workers share the directory above their own `basetemp`; the others
  wait for it): later calls find `final.json`, the metrics dict
  `train_and_evaluate` returned. Tests only read the run.

  Returns:
    The workdir.
  """
  return shared_once(
      basetemp, name, lambda workdir: _train_tiny_run(workdir, gated)
  )


def shared_once(basetemp, name: str, make) -> str:
  """`make(workdir)` once per test session for every pytest-xdist worker.

  The workers share the directory above their own `basetemp`; the first to
  ask makes `<shared>/<name>` under a file lock (the others wait for it), and
  a marker file says it is complete.

  Returns:
    The workdir.
  """
  shared = (
      os.path.dirname(str(basetemp))
      if os.environ.get('PYTEST_XDIST_WORKER')
      else basetemp
  )
  workdir = os.path.join(str(shared), name)
  with open(workdir + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not os.path.exists(workdir + '.done'):
      make(workdir)
      open(workdir + '.done', 'w').close()
  return workdir


def _train_tiny_run(workdir: str, gated: bool) -> None:
  arg = f'depth=8,epochs=1,gated={gated}'
  config = load_repo_config('digits.py', arg)
  config.train.batch_size = 64  # 22 steps
  config.train.sync_every_steps = 1  # block on every step (multi-device CPU)
  config.train.log_every_steps = 4  # several points of the rate curves
  config.train.eval_every_epochs = 0.5  # evaluations at steps 11 and 22
  config.eval.batch_size = 64  # 360 = 5 x 64 + 40: the last batch is padded
  config.checkpoint.every_steps = 10  # checkpoints 10, 20, 22
  config.gates.eval_modes = ('deterministic', 'expected')
  file_arg = os.path.join(REPO, 'configs', f'digits.py:{arg}')
  final = trainer.train_and_evaluate(
      config, workdir, hparam_fields=trainer.changed_fields(config, file_arg)
  )
  with open(os.path.join(workdir, 'final.json'), 'w') as f:
    json.dump(final, f)


def final_metrics(workdir: str) -> dict:
  """The metrics dict `train_and_evaluate` returned for a `train_tiny_run`."""
  with open(os.path.join(workdir, 'final.json')) as f:
    return json.load(f)


@pytest.fixture(scope='session')
def gated_run(tmp_path_factory):
  """The workdir of the gated `train_tiny_run`, trained once per session."""
  return train_tiny_run(tmp_path_factory.getbasetemp(), 'tiny_gated')


@pytest.fixture(scope='session')
def loaded(gated_run):
  """`adanet_jax.load` of the gated tiny run."""
  from adanet_jax.infer import inference  # pylint: disable=import-outside-toplevel

  return inference.load(gated_run)


@pytest.fixture
def small_disk(tmp_path):
  """Mounts a tmpfs of a given size (`small_disk('3m')`) under `tmp_path`,
  a real disk that fills; unmounted after the test. Skipped with the reason
  where mounting is not permitted (not root)."""
  mounted = []

  def mount(size: str, name: str = 'disk'):
    path = tmp_path / name
    path.mkdir()
    out = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
      pytest.skip(f'cannot mount a tmpfs: {out.stderr.strip()}')
    mounted.append(path)
    return path

  yield mount
  for path in mounted:
    subprocess.run(['umount', str(path)], check=True)


def remount(path, options: str) -> None:
  """Remounts the `small_disk` at `path` ('size=64m', 'ro', 'rw')."""
  subprocess.run(['mount', '-o', f'remount,{options}', str(path)], check=True)


def fill(path) -> None:
  """Fills the disk holding the directory `path` to the last byte."""
  with open(os.path.join(path, 'filler'), 'wb', buffering=0) as f:
    try:
      while True:
        f.write(b'\0' * 4096)
    except OSError:
      pass


def make_immutable(path) -> None:
  """`chattr +i path` (on a `small_disk`: unmounting it clears the flag);
  skips the test where that is not permitted."""
  out = subprocess.run(['chattr', '+i', str(path)], capture_output=True)
  if out.returncode != 0:
    pytest.skip(f'cannot make {path} immutable: {out.stderr.decode().strip()}')


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
  env = dict(
      os.environ,
      SLURM_TEST_CTLD_PORT=str(_free_port()),
      SLURM_TEST_SLURMD_PORT=str(_free_port()),
  )
  try:
    out = subprocess.run(
        ['bash', SLURM_CLUSTER_SCRIPT, 'start', str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    reason = (
        out.stderr.strip().splitlines() or [f'exit status {out.returncode}']
    )[-1]
  except (OSError, subprocess.TimeoutExpired) as e:
    out, reason = None, str(e)
  if out is None or out.returncode != 0:
    subprocess.run(['bash', SLURM_CLUSTER_SCRIPT, 'stop', str(directory)])
    message = f'no SLURM cluster: {reason}'
    if os.environ.get('CI') == 'true':
      pytest.fail(message)
    pytest.skip(message)
  try:
    yield dict(os.environ, SLURM_CONF=str(directory / 'slurm.conf'))
  finally:
    subprocess.run(['bash', SLURM_CLUSTER_SCRIPT, 'stop', str(directory)])


# `--dist loadfile` hands whole files to the two workers in collection order;
# the longest files go first so that both workers finish at about the same
# time, not one waiting while the other runs a long file alone.
LONGEST_FILES = (
    'test_signals.py',
    'test_recipes.py',
    'test_multihost.py',
    'test_faults.py',
    'test_slurm.py',
    'test_sweep.py',
    'test_skip_inference.py',
    'test_resnet.py',
    'test_torch_io.py',
    'test_trainer.py',
    'test_steps.py',
)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  # a stable sort: the order within a file stays
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
