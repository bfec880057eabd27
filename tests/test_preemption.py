"""`preemption` (one process): while `StopRequest` is active, each stop signal
(`train.stop_signals`) only records a stop request; outside training
`stopping_at_once` makes them raise `StopSignal` (held back during imports by
`stop_signals_deferred`); ignored signals stay ignored; SIGQUIT keeps its
meaning; the handlers before come back afterwards."""

import os
import signal
import threading

import pytest

from adanet_jax import config_lib, errors
from adanet_jax.train import checks, preemption

DEFAULT = ('SIGTERM', 'SIGINT', 'SIGUSR1', 'SIGUSR2', 'SIGHUP')
ALL = [signal.Signals[n] for n in preemption.ALLOWED_STOP_SIGNALS]


def _handlers() -> dict:
  return {s: signal.getsignal(s) for s in ALL}


@pytest.mark.parametrize('name', DEFAULT)
def test_each_default_stop_signal_is_recorded_and_the_old_handlers_restored(
    name,
):
  assert preemption.DEFAULT_STOP_SIGNALS == DEFAULT
  before = _handlers()
  with preemption.StopRequest() as stop:
    assert not stop.should_stop(3)
    assert signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL  # untouched
    os.kill(os.getpid(), signal.Signals[name])  # recorded, nothing raised
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
    assert stop.should_stop(4)
    assert stop.message(4, 10) == (
        f'stopped by {name} at step 4 of 10; saved a checkpoint of '
        'step 4; run the same command again to resume from there'
    )
  assert _handlers() == before
  assert errors.Preempted('x').exit_code == errors.Preempted.exit_code == 75


def test_an_ignored_signal_stays_ignored():
  # As under `nohup` (SIGHUP) or for a background job of a script (SIGINT).
  previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
  try:
    with preemption.stopping_at_once(), preemption.StopRequest() as stop:
      assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
      os.kill(os.getpid(), signal.SIGHUP)
      assert not stop.should_stop(1)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGHUP, previous)


def test_outside_training_a_stop_signal_raises_stop_signal():
  before = _handlers()
  with preemption.stopping_at_once():
    with pytest.raises(preemption.StopSignal) as raised:
      os.kill(os.getpid(), signal.SIGUSR2)
    assert raised.value.signal_name == 'SIGUSR2'
    assert isinstance(raised.value, KeyboardInterrupt)  # Ctrl-C clean-ups run
    # Held back while JAX and the like are imported, raised right after
    # (sent to the main thread: the test session has other threads, which an
    # entry point has not yet at that point).
    reached = []
    with pytest.raises(preemption.StopSignal):
      with preemption.stop_signals_deferred():
        signal.pthread_kill(threading.main_thread().ident, signal.SIGHUP)
        reached.append('after the kill')
    assert reached == ['after the kill']
  assert _handlers() == before


def test_signals_outside_the_configured_set_keep_their_usual_meaning():
  with preemption.stopping_at_once():
    with preemption.StopRequest(('SIGTERM', 'SIGQUIT')) as stop:
      assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
      assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
      os.kill(os.getpid(), signal.SIGQUIT)  # named: recorded, no core dump
      assert stop.message(2, 3).startswith('stopped by SIGQUIT at step 2')
    with pytest.raises(preemption.StopSignal):
      os.kill(os.getpid(), signal.SIGUSR1)  # the start-up handler is back


def test_unknown_stop_signals_are_refused_in_one_line():
  config = config_lib.get_base_config()
  assert config.train.stop_signals == DEFAULT
  config_lib.apply_overrides(config, {'train.stop_signals': 'SIGTERM,SIGQUIT'})
  assert config.train.stop_signals == ('SIGTERM', 'SIGQUIT')
  checks.validate(config)
  config_lib.apply_overrides(config, {'train.stop_signals': 'SIGTERM,SIGKILL'})
  with pytest.raises(errors.ConfigError) as raised:
    checks.validate(config)
  assert str(raised.value) == (
      "train.stop_signals=('SIGTERM', 'SIGKILL'): 'SIGKILL' is not a stop "
      'signal; allowed: SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP, SIGQUIT, '
      'SIGXCPU'
  )


def test_one_process_has_no_preemption_service():
  # JAX starts it only in `jax.distributed.initialize`; one process asks its own flag.
  assert not preemption.preemption_service_running()
  assert not preemption.StopRequest().should_stop(1)
