"""`train.profile_steps`: the trace of a few steps (profiling.StepProfiler).

The trace written by a real run is checked in tests/test_console.py.
"""

import logging
import os
import subprocess

from conftest import make_immutable
import jax
import jax.numpy as jnp

from adanet_jax.train import profiling


def test_a_profile_that_cannot_be_written_is_one_warning_and_training_goes_on(
    tmp_path, caplog
):
  logdir = tmp_path / 'profile'
  logdir.mkdir()
  make_immutable(logdir)
  try:
    profiler = profiling.StepProfiler(str(logdir), 2, 0, 10)
    with caplog.at_level(logging.INFO, logger='adanet_jax.train.profiling'):
      for step in range(1, 5):  # traces steps 2 and 3, written after step 3
        profiler.step_done(step, jnp.zeros(()))
  finally:
    subprocess.run(['chattr', '-i', str(logdir)], check=True)
  assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
      ('INFO', f'profiling steps 2 to 3 into {logdir}'),
      (
          'WARNING',
          f'profile not written to {logdir} (PERMISSION_DENIED: '
          f'{logdir}/plugins; Operation not permitted); training goes on '
          'without it',
      ),
  ]
  assert not profiler.tracing and os.listdir(logdir) == []
  # Now writable: the session JAX kept open is written, so that later traces
  # of this process start afresh.
  jax.profiler.stop_trace()
  assert os.listdir(logdir) == ['plugins']
