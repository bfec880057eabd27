"""Experiment (not a test): how the survivor of `srun -n 2` ends when the
other task is SIGKILLed, without `--kill-on-bad-exit`.

  python -m experiments.peer_death [--trials=5] [--devices=1,2] \
      [--kill_at_step=1] [--checkpoint_every=100] \
      [--out=experiments/results/peer_death.txt]

Starts the one-node test cluster (tests/slurm/cluster.sh, needs root and
slurm-wlm), then per trial runs the tiny digits job (depth 8, 16 steps of 32
images, a checkpoint every `--checkpoint_every` steps, by default only the
final one) as `srun -n 2`, each task with `--devices` virtual CPU devices,
SIGKILLs task 1 once task 0 printed step `--kill_at_step`, and records how
task 0 ended:
  one_line: its last line is the one-line PeerProcessError, exit 1, no
    "Fatal Python error";
  abort: JAX's own abort ("Fatal Python error"), after the heartbeat timeout;
  other: anything else (the last lines are printed).
and the seconds from the kill to srun's exit. Prints a table of counts and
times per device count, and where in Python each aborted survivor waited
(the innermost frames of the stack that faulthandler printed); `--out` also
gets it.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(REPO, 'tests', 'slurm', 'cluster.sh')
STEP_LINE = re.compile(r'^0: .*step +(\d+)/\d+ \| epoch')
ONE_LINE = re.compile(
    r'0: error: process 0 of 2: another process of the job died .*'
)
OVERRIDES = {
    'train.batch_size': 32,
    'train.num_epochs': 16 * 32 / 1437,
    'train.sync_every_steps': 1,
    'train.log_every_steps': 1,
    'train.eval_every_epochs': 0.0,
    'eval.batch_size': 64,
    'checkpoint.every_steps': 100,
    'checkpoint.keep': 5,
}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(base: dict, devices: int) -> dict:
  env = dict(base)
  env.pop('JAX_NUM_CPU_DEVICES', None)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONUNBUFFERED'] = '1'
  return env


def _task_pid(workdir: str, task: int) -> int | None:
  for entry in os.listdir('/proc'):
    try:
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        argv = f.read().split(b'\0')
      with open(f'/proc/{entry}/environ', 'rb') as f:
        environ = f.read().split(b'\0')
    except OSError:
      continue
    if (
        f'--workdir={workdir}'.encode() in argv
        and b'adanet_jax.main' in argv
        and f'SLURM_PROCID={task}'.encode() in environ
    ):
      return int(entry)
  return None


def _waited_in(lines: list[str]) -> str:
  """The innermost frames of task 0's training thread in the stacks that
  faulthandler printed at the abort (the aborting thread is a native one)."""
  threads, frames = [], None
  for line in lines:
    text = line[3:].strip() if line.startswith('0: ') else ''
    if text.startswith(('Thread 0x', 'Current thread 0x')):
      frames = []
      threads.append(frames)
    elif frames is not None and text.startswith('File '):
      frames.append(text)
  for frames in threads:
    if any('adanet_jax/main.py' in f for f in frames):
      return ' <- '.join(
          re.sub(r'^File "\S*/(\S+)", line', r'\1', f) for f in frames[:8]
      )
  return 'no Python stack found'


def trial(
    env: dict, workdir: str, kill_at_step: int, checkpoint_every: int
) -> tuple[str, float, str]:
  """One srun job; (outcome, seconds from the kill to srun's exit, where an
  aborted survivor waited)."""
  command = [
      'srun',
      '-n',
      '2',
      '--cpus-per-task=1',
      '--time=10',
      '--label',
      sys.executable,
      '-m',
      'adanet_jax.main',
      '--config=configs/digits.py:depth=8',
      f'--workdir={workdir}',
  ] + [
      f'--config.{k}={v!r}'
      for k, v in {
          **OVERRIDES,
          'checkpoint.every_steps': checkpoint_every,
      }.items()
  ]
  proc = subprocess.Popen(
      command,
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      errors='replace',
  )
  lines, killed_at = [], None
  for line in proc.stdout:
    lines.append(line.rstrip('\n'))
    found = STEP_LINE.search(line)
    if killed_at is None and found and int(found.group(1)) >= kill_at_step:
      pid = _task_pid(workdir, 1)
      if pid is not None:
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
  proc.wait()
  took = time.monotonic() - killed_at if killed_at else float('nan')
  output = '\n'.join(lines)
  task0 = [l for l in lines if l.startswith('0: ')]
  if killed_at is None:
    outcome = 'not killed'
  elif 'Fatal Python error' in output:
    outcome = 'abort'
  elif task0 and ONE_LINE.fullmatch(task0[-1]) and 'Traceback' not in output:
    outcome = 'one_line'
  else:
    outcome = 'other'
    print('\n'.join(lines[-15:]), flush=True)
  waited = ''
  if outcome == 'abort':
    waited = _waited_in(lines)
    if waited == 'no Python stack found':
      print('\n'.join(l for l in lines if l.startswith('0: ')), flush=True)
  return outcome, took, waited


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--trials', type=int, default=5)
  parser.add_argument('--devices', default='1,2')
  parser.add_argument('--kill_at_step', type=int, default=1)
  parser.add_argument('--checkpoint_every', type=int, default=100)
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    cluster = os.path.join(tmp, 'slurm')
    base = dict(
        os.environ,
        SLURM_TEST_CTLD_PORT=str(_free_port()),
        SLURM_TEST_SLURMD_PORT=str(_free_port()),
    )
    subprocess.run(['bash', CLUSTER, 'start', cluster], env=base, check=True)
    base['SLURM_CONF'] = os.path.join(cluster, 'slurm.conf')
    try:
      for devices in [int(d) for d in args.devices.split(',')]:
        env = _env(base, devices)
        for i in range(args.trials):
          workdir = os.path.join(tmp, f'w{devices}_{i}')
          outcome, took, waited = trial(
              env, workdir, args.kill_at_step, args.checkpoint_every
          )
          print(
              f'devices/task {devices} trial {i}: {outcome} ({took:.1f} s)'
              + (f'; waited in {waited}' if waited else ''),
              flush=True,
          )
          rows.append((devices, outcome, took, waited))
    finally:
      subprocess.run(['bash', CLUSTER, 'stop', cluster], check=False)
  lines = [
      f'srun -n 2, task 1 SIGKILLed after step {args.kill_at_step} of task 0 '
      f'(of 16; checkpoint every {args.checkpoint_every}), no '
      '--kill-on-bad-exit',
      'devices/task  outcome     count  seconds from kill to exit',
  ]
  for devices in sorted({r[0] for r in rows}):
    for outcome in sorted({r[1] for r in rows if r[0] == devices}):
      times = [r[2] for r in rows if r[:2] == (devices, outcome)]
      lines.append(
          f'{devices:<13} {outcome:<11} {len(times):<6} '
          + ' '.join(f'{t:.1f}' for t in times)
      )
  lines += sorted(
      {f'abort, {r[0]} devices/task, waited in: {r[3]}' for r in rows if r[3]}
  )
  print('\n'.join(lines))
  if args.out:
    with open(args.out, 'w') as f:
      f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main()
