"""Multi-process training through `adanet_jax.launch` and `jax.distributed` on
localhost: 2 processes x 2 CPU devices equal 1 process x 4 devices, from
scratch and when resuming another topology's checkpoint; only process 0
writes; the launcher's timeout kills a hung job. Also where the distributed
settings come from (`adanet_jax.runtime.distributed`).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from conftest import REPO, restore_state
import jax
import numpy as np
import pytest

from adanet_jax.errors import ConfigError, PeerProcessError
from adanet_jax.runtime import distributed
from adanet_jax.tools import launch

STEPS = 4
# The tiny digits job of tests/test_trainer.py: batch 32, 4 steps,
# checkpoints at steps 2 and 4, blocking on every step (multi-device CPU).
OVERRIDES = {
    'train.batch_size': 32,
    'train.num_epochs': STEPS * 32 / 1437,
    'train.sync_every_steps': 1,
    'train.log_every_steps': 2,
    'train.eval_every_epochs': 0.0,
    'eval.batch_size': 64,
    'checkpoint.every_steps': 2,
}
CONFIG = 'digits.py'
CONFIG_ARG = 'depth=8'
# Keys that depend on timing, or on what the compilation cache held.
TIMING_KEYS = (
    'train/images_per_s',
    'train/eta_s',
    'run/compile_s',
    'run/compile_cached',
)


def _main_args(workdir) -> list[str]:
  return [f'--config=configs/{CONFIG}:{CONFIG_ARG}', f'--workdir={workdir}'] + [
      f'--config.{k}={v!r}' for k, v in OVERRIDES.items()
  ]


def _config(load_config):
  config = load_config(CONFIG, CONFIG_ARG)
  for key, value in OVERRIDES.items():
    section, field = key.split('.')
    config[section][field] = value
  return config


def _launch(workdir, *, processes=2, timeout=400, extra=()):
  """Runs the launcher; returns the CompletedProcess (text output)."""
  return subprocess.run(
      [
          sys.executable,
          '-m',
          'adanet_jax.tools.launch',
          f'--processes={processes}',
          '--devices_per_process=2',
          f'--timeout={timeout}',
          '--',
          *_main_args(workdir),
          *extra,
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=timeout + 60,
  )


def _check_ok(out):
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The 1-process x 4-device run (no jax.distributed): its workdir."""
  workdir = tmp_path_factory.mktemp('one_process') / 'w'
  out = subprocess.run(
      [sys.executable, '-m', 'adanet_jax.main', *_main_args(workdir)],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=400,
      env=launch.cpu_devices_env(os.environ, 4),
  )
  _check_ok(out)
  return workdir


def _assert_same_state(config, workdir, reference_workdir):
  (step, state), (ref_step, ref) = (
      restore_state(config, w) for w in (workdir, reference_workdir)
  )
  assert step == ref_step == STEPS
  for part in ('params', 'batch_stats', 'opt_state'):
    for x, y in zip(
        jax.tree.leaves(getattr(state, part)),
        jax.tree.leaves(getattr(ref, part)),
    ):
      np.testing.assert_allclose(
          np.asarray(x), np.asarray(y), atol=1e-5, rtol=0
      )


def _metric_lines(workdir):
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [{k: v for k, v in l.items() if k not in TIMING_KEYS} for l in lines]


@pytest.mark.timeout(900)
def test_two_processes_equal_one_process(load_config, reference, tmp_path):
  workdir = tmp_path / 'w'
  out = _launch(workdir)
  _check_ok(out)
  lines = out.stdout.splitlines()
  # both processes' output, prefixed
  assert any(l.startswith('[1] ') for l in lines)
  assert any(
      '4 cpu device(s), 2 process(es) (explicit settings)' in l for l in lines
  )
  # Only process 0 logs metrics and writes them (once: as many lines as the reference).
  assert not any(l.startswith('[1] ') and '| loss ' in l for l in lines)
  assert any(l.startswith('[0] step ') and '| loss ' in l for l in lines)
  # Start-up says what it waits for; gloo's connection lines stay off the console.
  assert any('waiting until all 2 processes have connected' in l for l in lines)
  assert not any('[Gloo]' in l for l in lines)
  ours, ref = _metric_lines(workdir), _metric_lines(reference)
  assert [l['step'] for l in ours] == [l['step'] for l in ref] == [2, 4, 4]
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(
        np.concatenate([np.ravel(a[k]) for k in sorted(a) if k != 'step']),
        np.concatenate([np.ravel(b[k]) for k in sorted(b) if k != 'step']),
        atol=1e-5,
        rtol=0,
    )
  assert os.listdir(workdir / 'eval') == [
      'class_block_rates_deterministic_step00000004.csv'
  ]
  assert (
      len([n for n in os.listdir(workdir) if n.startswith('events.out')]) == 1
  )
  _assert_same_state(_config(load_config), workdir, reference)


@pytest.mark.timeout(900)
def test_two_processes_resume_one_process_checkpoint(
    load_config, reference, tmp_path
):
  # Every process restores the step-2 checkpoint of the 1-process run into its
  # own shardings, then trains steps 3 and 4.
  workdir = tmp_path / 'w'
  shutil.copytree(reference, workdir)
  shutil.rmtree(workdir / 'checkpoints' / str(STEPS))
  _check_ok(_launch(workdir))
  _assert_same_state(_config(load_config), workdir, reference)


def _alive(pid: int, marker: str) -> bool:
  """Whether process `pid` still exists and is ours (its command has `marker`)."""
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return marker in f.read().decode(errors='replace')
  except FileNotFoundError:
    return False


@pytest.mark.timeout(180)
def test_launcher_timeout_kills_a_hung_job(tmp_path):
  # Each process is told the job has 3 processes: jax.distributed waits for
  # a third that never comes, so the job hangs until the launcher kills it.
  workdir = str(tmp_path / 'hung')
  start = time.monotonic()
  out = _launch(workdir, timeout=5, extra=['--num_processes=3'])
  assert out.returncode == launch.TIMEOUT_STATUS, (
      out.stdout[-3000:] + out.stderr[-3000:]
  )
  assert (
      'launch: timed out after 5 s; killed the 2 process(es) still running'
      in out.stderr
  )
  assert time.monotonic() - start < 80
  pids = [
      int(p)
      for p in re.findall(r'^launch: process \d+ pid (\d+)', out.stdout, re.M)
  ]
  assert len(pids) == 2
  assert not any(_alive(pid, workdir) for pid in pids)


def test_settings_come_from_flags_then_environment():
  env = {
      'JAX_COORDINATOR_ADDRESS': 'h:1',
      'JAX_NUM_PROCESSES': '4',
      'JAX_PROCESS_ID': '3',
  }
  assert distributed.resolve_settings(environ=env).values() == ('h:1', 4, 3)
  assert distributed.resolve_settings('f:2', None, 0, environ=env).values() == (
      'f:2',
      4,
      0,
  )
  assert distributed.resolve_settings(environ={}).empty
  with pytest.raises(ConfigError, match=r'process id 4 is outside \[0, 4\)'):
    distributed.resolve_settings(process_id=4, environ=env)
  with pytest.raises(
      ConfigError, match=r"JAX_NUM_PROCESSES='two' must be an integer"
  ):
    distributed.resolve_settings(environ={'JAX_NUM_PROCESSES': 'two'})


# What makes JAX see a cluster around a process (and the settings it would
# otherwise read from the environment).
CLUSTER_VARIABLES = (
    'SLURM_JOB_ID',
    'OMPI_MCA_orte_hnp_uri',
    'KUBERNETES_SERVICE_HOST',
    'TPU_WORKER_HOSTNAMES',
    distributed.ENV_COORDINATOR,
    distributed.ENV_NUM_PROCESSES,
    distributed.ENV_PROCESS_ID,
)


def _initialize_in_a_new_process(script: str, **variables) -> list[str]:
  """Runs `script` in a fresh interpreter (JAX joins a job only before its
  backend starts) outside any cluster, plus `variables`; its stdout lines."""
  env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES}
  out = subprocess.run(
      [
          sys.executable,
          '-c',
          'from adanet_jax.runtime import distributed\n'
          'import jax\n' + script,
      ],
      cwd=REPO,
      env={**env, **variables},
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout.splitlines()


def test_no_cluster_is_one_process_and_incomplete_settings_are_refused():
  # JAX's own auto-detection finds no cluster: one process, nothing started.
  assert _initialize_in_a_new_process(
      'print(distributed.initialize())\n'
      'try:\n'
      '  distributed.initialize("h:1")\n'
      'except distributed.ConfigError as e:\n'
      '  print(e)\n'
      'print(jax.distributed.is_initialized(), jax.process_count())\n'
  ) == [
      'single process',
      'incomplete distributed settings (coordinator address, process count, process id = '
      "('h:1', None, None)) and no cluster environment to detect the rest: give all three "
      '(flags, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)',
      'False 1',
  ]


def test_slurm_environment_is_detected_by_jax():
  # A one-task SLURM step on this machine: JAX reads the job from SLURM's
  # variables and starts the coordinator here (on a free port).
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  assert _initialize_in_a_new_process(
      'print(distributed.initialize())\n'
      'print(jax.distributed.is_initialized(), jax.process_count(), jax.process_index())\n',
      SLURM_JOB_ID='7',
      SLURM_STEP_NODELIST='localhost',
      SLURM_NTASKS='1',
      SLURM_PROCID='0',
      SLURM_LOCALID='0',
      JAX_COORDINATOR_PORT=str(port),
  ) == ['cluster environment detected by JAX', 'True 1 0']


@pytest.fixture
def calls(monkeypatch):
  """Records calls of jax.distributed.initialize instead of making them (as
  JAX inside a cluster: no error)."""
  made = []
  monkeypatch.setattr(
      jax.distributed, 'initialize', lambda *a, **k: made.append((a, k))
  )
  return made


# A dead peer is declared after this, not JAX's default 100 s (distributed.py).
HEARTBEAT = {'heartbeat_timeout_seconds': distributed.HEARTBEAT_TIMEOUT_S}


def test_explicit_settings_skip_cluster_detection(calls):
  assert distributed.initialize('h:1', 2, 1, environ={}) == 'explicit settings'
  assert calls == [
      (
          ('h:1', 2, 1),
          {'cluster_detection_method': 'deactivate', **HEARTBEAT},
      )
  ]


def test_unset_settings_are_left_to_jax_detection(calls):
  assert (
      distributed.initialize(environ={})
      == 'cluster environment detected by JAX'
  )
  assert distributed.initialize(environ={'JAX_PROCESS_ID': '1'}) == (
      'cluster environment detected by JAX'
  )
  assert calls == [
      ((None, None, None), HEARTBEAT),
      ((None, None, 1), HEARTBEAT),
  ]


def test_worker_environment_replaces_the_device_count():
  env = launch.worker_env(
      {
          'XLA_FLAGS': '--xla_a=1 --xla_force_host_platform_device_count=8',
          'JAX_NUM_CPU_DEVICES': '8',
      },
      1,
      2,
      3,
      '127.0.0.1:5',
  )
  assert (
      env['XLA_FLAGS'] == '--xla_a=1 --xla_force_host_platform_device_count=3'
  )
  assert 'JAX_NUM_CPU_DEVICES' not in env
  assert (
      env['JAX_COORDINATOR_ADDRESS'],
      env['JAX_NUM_PROCESSES'],
      env['JAX_PROCESS_ID'],
  ) == ('127.0.0.1:5', '2', '1')


def test_a_collective_broken_by_a_dead_peer_is_one_line(monkeypatch):
  # what XLA:CPU's gloo raised in the srun test of tests/test_slurm.py
  broken = jax.errors.JaxRuntimeError(
      'INTERNAL: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/'
      'pair.cc:534] Read error [127.0.0.1]:40523: Connection reset by peer'
  )
  other = jax.errors.JaxRuntimeError('INTERNAL: something else')
  for count, error, expected in (
      (2, broken, PeerProcessError),
      (2, other, jax.errors.JaxRuntimeError),
      (1, broken, jax.errors.JaxRuntimeError),  # no peer to blame
  ):
    monkeypatch.setattr(jax, 'process_count', lambda c=count: c)
    with pytest.raises(expected) as e:
      with distributed.peer_failures_reported():
        raise error
    if expected is PeerProcessError:
      assert str(e.value) == (
          'process 0 of 2: another process of the job died (all-reduce '
          'failed: Connection reset by peer); this one stopped too; run the '
          'same command again for all processes to resume from the last '
          'checkpoint'
      )
      assert e.value.exit_code == 1
    else:
      assert e.value is error
