"""`preemption.StopRequest` (one process): SIGTERM/SIGINT only record a stop
request while it is active; the handlers before it come back afterwards."""

import os
import signal

from adanet_jax import errors
from adanet_jax.train import preemption


def test_signals_are_recorded_and_the_old_handlers_restored():
  before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
  with preemption.StopRequest() as stop:
    assert not stop.should_stop(3)
    os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: recorded
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
    assert stop.should_stop(4)
    assert stop.message(4, 10) == (
        'stopped by SIGINT at step 4 of 10; saved a checkpoint of '
        'step 4; run the same command again to resume from there'
    )
  assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
  assert errors.Preempted('x').exit_code == errors.Preempted.exit_code == 75


def test_one_process_has_no_preemption_service():
  # JAX starts it only in `jax.distributed.initialize`; one process asks its own flag.
  assert not preemption.preemption_service_running()
  assert not preemption.StopRequest().should_stop(1)
