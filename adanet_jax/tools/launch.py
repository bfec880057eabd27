"""Local multi-process launcher: N copies of `adanet_jax.main` on this
machine, joined by `jax.distributed` over localhost, to run and test the
multi-host code path on CPU.

  python -m adanet_jax.tools.launch --processes 2 [--devices_per_process 2] \
      [--timeout 600] -- --config=configs/digits.py --workdir=DIR [...]

Everything after `--` goes to every process unchanged. Process i gets
`XLA_FLAGS=--xla_force_host_platform_device_count=K` (K =
--devices_per_process), `JAX_PLATFORMS=cpu`, and the distributed settings in
the environment (`JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>`,
`JAX_NUM_PROCESSES=N`, `JAX_PROCESS_ID=i`; see `adanet_jax/runtime/distributed.py`).
Its output (stdout and stderr) is printed line by line prefixed with `[i] `.

Exit status: 0 when every process exits with 0; when one fails, the others
are killed at once and the status is the failed one's (128 + signal if it
was killed); 124 when --timeout seconds pass first (all killed with SIGKILL).

Each process runs in its own process group, so a Ctrl-C at the terminal
reaches only the launcher. A stop signal the launcher receives (SIGTERM,
SIGINT, SIGUSR1, SIGUSR2, SIGHUP: `adanet_jax.train.preemption`) is passed on
to every process; they stop together at the next step boundary and save, the
launcher waits for them (STOP_GRACE_S at most once the first has exited,
then SIGKILL) and exits with status 75 and one line, as a stopped training
process does. Workers get no SLURM variables: the launcher is the job's one
task, and it alone requeues a SLURM batch job (`adanet_jax.runtime.cli`).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import flags

from adanet_jax.errors import Preempted
from adanet_jax.runtime import cli
from adanet_jax.train import preemption


def define_flags() -> dict:
  return dict(
      processes=flags.DEFINE_integer(
          'processes', 2, 'Number of processes to start.', lower_bound=1
      ),
      devices_per_process=flags.DEFINE_integer(
          'devices_per_process',
          1,
          'Virtual CPU devices per process.',
          lower_bound=1,
      ),
      timeout=flags.DEFINE_float(
          'timeout',
          600.0,
          'Seconds before every process is killed (exit status 124).',
      ),
  )


MODULE = 'adanet_jax.main'
TIMEOUT_STATUS = 124  # as coreutils `timeout`
# Seconds the other processes get to exit once one has exited after a stop
# signal; they saved together before any exits (the trainer syncs after it).
STOP_GRACE_S = 60.0
_DEVICE_COUNT_FLAG = re.compile(r'--xla_force_host_platform_device_count=\S*')


def free_port() -> int:
  """A TCP port on localhost that is free now (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def cpu_devices_env(environ: dict, devices: int) -> dict:
  """`environ` with JAX on CPU with `devices` virtual devices.

  Args:
    environ: the environment to start from (not changed).
    devices: the number of virtual CPU devices.

  Returns:
    A new environment: an inherited device count (in XLA_FLAGS or
    JAX_NUM_CPU_DEVICES) is replaced, other XLA flags are kept.
  """
  env = dict(environ)
  env.pop('JAX_NUM_CPU_DEVICES', None)
  others = _DEVICE_COUNT_FLAG.sub('', env.get('XLA_FLAGS', '')).split()
  env['XLA_FLAGS'] = ' '.join(
      others + [f'--xla_force_host_platform_device_count={devices}']
  )
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONUNBUFFERED'] = '1'  # lines arrive as they are printed
  return env


def worker_env(
    environ: dict,
    process_id: int,
    num_processes: int,
    devices: int,
    coordinator: str,
) -> dict:
  """The environment of process `process_id` (see the module docstring)."""
  env = {
      k: v
      for k, v in cpu_devices_env(environ, devices).items()
      if not k.startswith('SLURM_')
  }
  env.update(
      JAX_COORDINATOR_ADDRESS=coordinator,
      JAX_NUM_PROCESSES=str(num_processes),
      JAX_PROCESS_ID=str(process_id),
  )
  return env


class Workers:
  """The started processes, their output pumps, and how to kill them."""

  def __init__(self):
    self.lock = threading.Lock()  # one whole line at a time on stdout
    self.procs, self.pumps = [], []
    self.stop_signal = None  # the first stop signal the launcher received
    self._told = set()  # indices of the processes it was passed on to
    self._first_exit = None  # when the first process exited after it

  def start(self, args: list[str], num_processes: int, devices: int) -> None:
    """Starts `python -m adanet_jax.main ARGS` as processes 0..num_processes-1."""
    coordinator = f'127.0.0.1:{free_port()}'
    for i in range(num_processes):
      # own process group: SIGKILL reaches its children too
      proc = subprocess.Popen(
          [sys.executable, '-m', MODULE, *args],
          env=worker_env(os.environ, i, num_processes, devices, coordinator),
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          stdin=subprocess.DEVNULL,
          start_new_session=True,
      )
      self.procs.append(proc)
      self._say(f'launch: process {i} pid {proc.pid} ({coordinator})')
      pump = threading.Thread(target=self._pump, args=(i, proc), daemon=True)
      pump.start()
      self.pumps.append(pump)

  def _say(self, line: str, stream=None) -> None:
    with self.lock:
      (stream or sys.stdout).write(line + '\n')
      (stream or sys.stdout).flush()

  def _pump(self, i: int, proc: subprocess.Popen) -> None:
    for raw in proc.stdout:
      self._say(f'[{i}] ' + raw.decode(errors='replace').rstrip('\n'))

  def pass_on(self, signum, frame=None) -> None:
    """A signal handler: records the stop signal and passes it on to every
    started process (again on a second one: it changes nothing there)."""
    del frame
    self.stop_signal = self.stop_signal or signal.Signals(signum).name
    self._told = set()
    self._tell_new()

  def _tell_new(self) -> None:
    """Passes the stop signal on to the processes started since."""
    for i, proc in enumerate(self.procs):
      if i not in self._told and proc.poll() is None:
        proc.send_signal(signal.Signals[self.stop_signal])
        self._told.add(i)

  def wait(self, timeout: float) -> int:
    """Waits for all to exit; kills all on the first failure or at `timeout`.

    Returns:
      The launcher's exit status (module docstring).
    """
    deadline = time.monotonic() + timeout
    while True:
      codes = [p.poll() for p in self.procs]
      if self.stop_signal is not None:
        self._tell_new()
        stopped = self._stopped(codes)
        if stopped is not None:
          return stopped
      failed = next(
          (i for i, c in enumerate(codes) if c not in (None, 0)), None
      )
      if failed is not None:
        self.kill()
        self._say(
            f'launch: process {failed} exited with status {codes[failed]}; killed the '
            'others',
            sys.stderr,
        )
        return codes[failed] if codes[failed] > 0 else 128 - codes[failed]
      if None not in codes:
        return 0
      if time.monotonic() > deadline:
        self.kill()
        self._say(
            f'launch: timed out after {timeout:g} s; killed the {codes.count(None)} '
            f'process(es) still running',
            sys.stderr,
        )
        return TIMEOUT_STATUS
      time.sleep(0.1)

  def _stopped(self, codes: list) -> int | None:
    """After a stop signal: the exit status once every process exited with 0
    or 75 (or STOP_GRACE_S after the first exited), else None."""
    if any(c not in (None, 0, Preempted.exit_code) for c in codes):
      return None  # a failure: reported as such
    if None in codes:
      if codes.count(None) == len(codes):
        return None
      self._first_exit = self._first_exit or time.monotonic()
      if time.monotonic() - self._first_exit < STOP_GRACE_S:
        return None
      self.kill()
      self._say(
          f'launch: {codes.count(None)} process(es) still running '
          f'{STOP_GRACE_S:g} s after the first exited; killed',
          sys.stderr,
      )
    return Preempted.exit_code if Preempted.exit_code in codes else 0

  def kill(self) -> None:
    """SIGKILLs the process group of every process not yet reaped, then reaps
    them (a reaped pid may belong to someone else by now: left alone)."""
    for proc in self.procs:
      if proc.poll() is None:
        try:
          os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
    for proc in self.procs:
      proc.wait()
    for (
        pump
    ) in self.pumps:  # the last lines; a leftover grandchild may hold a pipe
      pump.join(timeout=5)


def launch(
    args: list[str], num_processes: int, devices: int, timeout: float
) -> int:
  """Runs `python -m adanet_jax.main ARGS` in `num_processes` processes.

  Args:
    args: the arguments of every process.
    num_processes: how many processes.
    devices: virtual CPU devices per process.
    timeout: seconds before all are killed.

  Returns:
    The exit status (module docstring).

  Raises:
    Preempted: a stop signal stopped the processes, which saved.
  """
  workers = Workers()
  previous = {}
  for name in preemption.DEFAULT_STOP_SIGNALS:
    signum = signal.Signals[name]
    if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup: stays ignored
      previous[signum] = signal.signal(signum, workers.pass_on)
  try:
    workers.start(args, num_processes, devices)
    status = workers.wait(timeout)
  finally:  # also on an unexpected error: leave nothing running
    workers.kill()
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if workers.stop_signal is not None and status == Preempted.exit_code:
    raise Preempted(
        f'stopped by {workers.stop_signal}: passed on to the '
        f'{num_processes} processes, which saved a checkpoint (lines above); '
        'run the same command again to resume from there'
    )
  return status


def main(args) -> int:
  return launch(
      args.rest, args.processes, args.devices_per_process, args.timeout
  )


if __name__ == '__main__':
  cli.run(main, define_flags, overrides=False, passthrough=True)
