"""Hyperparameter sweeps through config overrides: plan, launch, resume, summarize.

A config file declares its sweeps next to itself:

  def get_sweeps():
    from adanet_jax.tools.sweep import grid
    return {'targets': grid(**{'loss.target': [0.3, 0.5, 0.7], 'seed': [0]})}

Each point is a dict of config overrides. The launcher

  python -m adanet_jax.tools.sweep --config=configs/digits.py[:args] --sweep=targets --root=DIR \
      [--parallel=N] [--config.x=y ...] \
      [--launcher=slurm --slurm.partition=P --slurm.time=MIN --slurm.gpus_per_task=G]

checks every override of every point against the config before anything runs,
prints the plan (the ordinary `adanet_jax.main` command of each point, also
written to DIR/commands.sh), and runs the points N at a time, one workdir per
point (DIR/<name from its overrides>). Re-running the same command resumes:
finished points are skipped, interrupted ones resume from their checkpoints,
failed ones are retried; failures are reported with the tail of their log and
the other points go on. `--summary_only` (and the end of every launch) writes
DIR/summary.md, DIR/summary.csv and DIR/accuracy_vs_gflops.png and prints
their paths. Ctrl-C (or SIGTERM) stops the running points (SIGTERM, then
SIGKILL after STOP_GRACE_S) and prints the command that resumes.

Points run as child processes (`LocalLauncher`, the default) or as one
SLURM job each (`--launcher=slurm`, `adanet_jax/tools/slurm_launcher.py`);
everything else is the same for both.
"""

import ctypes
import functools
import itertools
import os
import shlex
import signal
import subprocess
import sys
import time

from absl import flags

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError, ExpectedError, reported_write
from adanet_jax.runtime import cli
from adanet_jax.tools import sweep_summary
from adanet_jax.train import checks, rundir

STOP_GRACE_S = 20.0  # seconds a stopped point gets between SIGTERM and SIGKILL
POLL_S = 0.5


def define_flags() -> dict:
  return dict(
      config=flags.DEFINE_string(
          'config', None, 'Config file, with optional :arg.'
      ),
      sweep=flags.DEFINE_string(
          'sweep', None, 'Name of a sweep the config file defines.'
      ),
      root=flags.DEFINE_string(
          'root', None, 'Directory holding one workdir per point.'
      ),
      parallel=flags.DEFINE_integer(
          'parallel',
          None,
          'Points run at the same time (>= 1; '
          'default 1 locally, all at once on SLURM).',
      ),
      plan_only=flags.DEFINE_bool(
          'plan_only', False, 'Print and write the plan, run nothing.'
      ),
      summary_only=flags.DEFINE_bool(
          'summary_only', False, 'Only summarize the workdirs in --root.'
      ),
      launcher=flags.DEFINE_enum(
          'launcher',
          'local',
          ['local', 'slurm'],
          'local: child processes, --parallel at a time; slurm: one SLURM '
          'job per point through submitit.',
      ),
      slurm_partition=flags.DEFINE_string(
          'slurm.partition',
          None,
          'SLURM partition of the points (default: the ' "cluster's).",
      ),
      slurm_time=flags.DEFINE_integer(
          'slurm.time', 240, 'Time limit of each point, minutes.'
      ),
      slurm_gpus=flags.DEFINE_integer(
          'slurm.gpus_per_task', None, 'GPUs of each point.'
      ),
      slurm_cpus=flags.DEFINE_integer(
          'slurm.cpus_per_task', None, 'CPUs of each point.'
      ),
      slurm_mem=flags.DEFINE_string(
          'slurm.mem', None, 'Memory of each point, e.g. 16G.'
      ),
  )


def grid(**axes) -> list[dict]:
  """Sweep points: every combination of the values of each axis.

  Args:
    **axes: config path -> values, e.g. `**{'loss.target': [0.3, 0.5], 'seed': [0, 1]}`.

  Returns:
    A list of override dicts, one per point.
  """
  keys = list(axes)
  return [
      dict(zip(keys, values)) for values in itertools.product(*axes.values())
  ]


def point_name(overrides: dict) -> str:
  """Workdir name of a point: `target-0.3_seed-0` from {'loss.target': 0.3, 'seed': 0}."""
  parts = [f'{key.split(".")[-1]}-{value}' for key, value in overrides.items()]
  return '_'.join(parts).replace('/', '-') or 'default'


def load_points(config_arg: str, sweep: str, common: dict) -> list[dict]:
  """The points of `sweep`, each checked against the config with `common`
  applied (names, types and values, as `adanet_jax.main` checks them)."""
  path, _ = config_lib.split_path_arg(config_arg)
  module = config_lib.load_module(path)
  sweeps = module.get_sweeps() if hasattr(module, 'get_sweeps') else {}
  if sweep not in sweeps:
    raise ConfigError(
        f'--sweep={sweep!r} is not defined by {path}; its sweeps: '
        f'{", ".join(sorted(sweeps)) or "none (no get_sweeps())"}'
    )
  points = [dict(p) for p in sweeps[sweep]]
  names = [point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise ConfigError(
        f'sweep {sweep!r} has points with the same overrides: {names}'
    )
  for point in points:
    try:
      checks.validate(config_lib.load_config(config_arg, {**common, **point}))
    except ConfigError as e:
      raise ConfigError(f'sweep point {point_name(point)}: {e}') from None
  return points


def main_command(config_arg: str, workdir: str, overrides: dict) -> list[str]:
  """The ordinary training command line of one point."""
  return [
      sys.executable,
      '-m',
      'adanet_jax.main',
      f'--config={config_arg}',
      f'--workdir={workdir}',
  ] + [f'--config.{k}={v}' for k, v in overrides.items()]


def _die_with_parent():
  """Runs in the child before exec: SIGKILL it if the launcher dies."""
  ctypes.CDLL('libc.so.6', use_errno=True).prctl(
      1, signal.SIGKILL
  )  # PR_SET_PDEATHSIG


class LocalJob:
  """One point running as a child process of the sweep."""

  def __init__(self, command: list[str], workdir: str):
    log = os.path.join(workdir, rundir.LOG_FILE)
    with reported_write(log, rundir.SWEEP_STOPPED):
      os.makedirs(workdir, exist_ok=True)
      self.log = open(log, 'a')
    # Its own session: a Ctrl-C at the terminal reaches only the sweep, which
    # then stops the points itself (`stop`), so none prints a traceback.
    self.proc = subprocess.Popen(
        command,
        stdout=self.log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
        start_new_session=True,
    )

  def poll(self) -> int | None:
    """The exit status once the point ended, else None."""
    code = self.proc.poll()
    if code is not None:
      self.log.close()
    return code

  def stop(self, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, to the point's process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
      if self.proc.poll() is not None:
        break
      try:
        os.killpg(self.proc.pid, sig)
      except ProcessLookupError:
        break
      try:
        self.proc.wait(timeout=grace_s)
      except subprocess.TimeoutExpired:
        pass
    self.proc.wait()
    self.log.close()


class LocalLauncher:
  """Runs points on this machine. A launcher has `start(name, command,
  workdir)` returning a job with `poll()` and `stop()`, and `describe(job)`;
  see also `adanet_jax.tools.slurm_launcher.SlurmLauncher`."""

  name = 'local'

  def __init__(self, root: str | None = None):
    del root  # the points' files are all in their workdirs

  def start(self, name: str, command: list[str], workdir: str) -> LocalJob:
    del name
    return LocalJob(command, workdir)

  def describe(self, job: LocalJob) -> str:
    return f'pid {job.proc.pid}'


class SweepInterrupted(Exception):
  """Ctrl-C (or SIGTERM) stopped the sweep; the running points were stopped."""


def check_root(root: str, manifest: dict) -> None:
  """Refuses a root that holds another sweep; records this one otherwise."""
  path = os.path.join(root, rundir.SWEEP_MANIFEST_FILE)
  if os.path.exists(path):
    stored = rundir.read_json(path)
    if stored != manifest:
      raise ConfigError(
          f'--root={root} holds a different sweep ({stored["config"]} '
          f'--sweep={stored["sweep"]} with other points or overrides); use '
          'another root'
      )
  else:
    with reported_write(path, rundir.SWEEP_STOPPED):
      os.makedirs(root, exist_ok=True)
      rundir.write_json(path, manifest)


def run_sweep(
    config_arg: str,
    sweep: str,
    root: str,
    parallel: int,
    common: dict,
    plan_only: bool = False,
    make_launcher=None,
) -> dict:
  """Plans and runs (or resumes) a sweep.

  Args:
    config_arg, sweep, root, parallel, common, plan_only: as the flags.
    make_launcher: makes the launcher of the points from the absolute root
      (default `LocalLauncher`; the SLURM launcher keeps its files there).

  Returns:
    {point name: status}.

  Raises:
    SweepInterrupted: on Ctrl-C or SIGTERM, after the running points stopped.
  """
  points = load_points(
      config_arg, sweep, common
  )  # all checks before anything starts
  root = os.path.abspath(root)
  jobs = {point_name(p): (p, os.path.join(root, point_name(p))) for p in points}
  commands = {
      name: main_command(config_arg, wd, {**common, **p})
      for name, (p, wd) in jobs.items()
  }
  check_root(
      root,
      {
          'config': config_arg,
          'sweep': sweep,
          'common': common,
          'points': points,
      },
  )
  _print_plan(root, jobs, commands)
  if plan_only:
    return {}
  launcher = (make_launcher or LocalLauncher)(root)
  todo = [
      n
      for n in jobs
      if rundir.read_sweep_status(jobs[n][1]).get('status') != 'done'
  ]
  print(
      f'{len(jobs) - len(todo)} of {len(jobs)} points already done', flush=True
  )
  results = {n: 'done' for n in jobs if n not in todo}
  running = {}
  try:
    while todo or running:
      while todo and len(running) < parallel:
        name = todo.pop(0)
        running[name] = (
            launcher.start(name, commands[name], jobs[name][1]),
            time.time(),
        )
        print(
            f'started {name} ({launcher.describe(running[name][0])})',
            flush=True,
        )
      time.sleep(POLL_S)
      for name in list(running):
        code = running[name][0].poll()
        if code is None:
          continue
        start = running.pop(name)[1]
        results[name] = _finish(name, jobs[name], commands[name], code, start)
        print(
            f'[{len(results)}/{len(jobs)}] {name}: {results[name]} '
            f'({time.time() - start:.0f} s)',
            flush=True,
        )
  except KeyboardInterrupt:
    for job, _ in running.values():
      job.stop()
    raise SweepInterrupted(f'{len(running)} running point(s) stopped') from None
  except ExpectedError:  # a write of the sweep's own files failed
    for job, _ in running.values():
      job.stop()  # each saves a checkpoint to resume from
    raise
  sweep_summary.write_summary(root)
  return results


def _print_plan(root, jobs, commands) -> None:
  lines = [' '.join(commands[name]) for name in jobs]
  path = os.path.join(root, 'commands.sh')
  with rundir.reported_file(path, rundir.SWEEP_STOPPED) as f:
    f.write('#!/bin/sh\n' + '\n'.join(lines) + '\n')
  print(
      f'sweep plan: {len(jobs)} points under {root} (also in {root}/commands.sh)'
  )
  for name, line in zip(jobs, lines):
    state = rundir.read_sweep_status(jobs[name][1]).get('status', 'new')
    print(f'  {name} [{state}]: {line}')
  sys.stdout.flush()


def _finish(name, job, command, returncode, start) -> str:
  overrides, workdir = job
  status = 'done' if returncode == 0 else 'failed'
  previous = rundir.read_sweep_status(workdir)
  with reported_write(rundir.sweep_status_path(workdir), rundir.SWEEP_STOPPED):
    rundir.write_sweep_status(
        workdir,
        {
            'status': status,
            'overrides': overrides,
            'command': command,
            'returncode': returncode,
            'wall_s': previous.get('wall_s', 0.0) + time.time() - start,
        },
    )
  if status == 'failed':
    with open(os.path.join(workdir, rundir.LOG_FILE)) as f:
      tail = f.read().splitlines()[-15:]
    print(
        f'point {name} failed (exit {returncode}); last lines of its log:\n  '
        + '\n  '.join(tail),
        flush=True,
    )
  return status


class SweepFailed(ExpectedError):
  """Some points failed; the others ran. Rerunning retries the failed ones."""

  exit_code = 1


def _launcher_factory(args):
  """Makes the launcher the flags ask for, from the sweep's root."""
  if args.launcher == 'local':
    return LocalLauncher
  for name, value, low in (
      ('slurm.time', args.slurm_time, 1),
      ('slurm.gpus_per_task', args.slurm_gpus, 0),
      ('slurm.cpus_per_task', args.slurm_cpus, 1),
  ):
    if value is not None and value < low:
      raise ConfigError(f'--{name}={value} must be >= {low}')
  from adanet_jax.tools import slurm_launcher  # pylint: disable=import-outside-toplevel

  options = slurm_launcher.SlurmOptions(
      args.slurm_partition,
      args.slurm_time,
      args.slurm_gpus,
      args.slurm_cpus,
      args.slurm_mem,
  )
  return functools.partial(slurm_launcher.SlurmLauncher, options=options)


def _print_outputs(root: str) -> None:
  root = os.path.abspath(root)
  for name in sweep_summary.OUTPUT_FILES:
    print(f'wrote {os.path.join(root, name)}')
  sys.stdout.flush()


def _raise_keyboard_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


class SweepInterruptedError(ExpectedError):
  """Ctrl-C or SIGTERM stopped the sweep; the message says how to resume."""

  exit_code = 1


def main(args) -> None:
  if args.summary_only:
    cli.require(args, 'root')
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
      raise ConfigError(
          f'--root={args.root} is not a directory: nothing to summarize'
      )
    print(sweep_summary.write_summary(root))
    _print_outputs(root)
    return
  cli.require(args, 'config', 'sweep', 'root')
  parallel = args.parallel
  if parallel is None:
    parallel = (
        sys.maxsize if args.launcher == 'slurm' else 1
    )  # SLURM's scheduler decides
  if parallel < 1:
    raise ConfigError(f'--parallel={args.parallel} must be >= 1')
  if os.path.exists(args.root) and not os.path.isdir(args.root):
    raise ConfigError(f'--root={args.root} is a file, not a directory')
  make_launcher = _launcher_factory(args)
  signal.signal(
      signal.SIGTERM, _raise_keyboard_interrupt
  )  # stop the points as on Ctrl-C
  try:
    results = run_sweep(
        args.config,
        args.sweep,
        args.root,
        parallel,
        args.overrides,
        args.plan_only,
        make_launcher,
    )
  except (SweepInterrupted, KeyboardInterrupt) as e:
    stopped = f' ({e})' if str(e) else ''
    command = ['python', '-m', 'adanet_jax.tools.sweep', *sys.argv[1:]]
    raise SweepInterruptedError(
        f'sweep interrupted{stopped}; rerun to resume: '
        f'{shlex.join(command)}'
    ) from None
  if results:
    _print_outputs(args.root)
  failed = sorted(n for n, s in results.items() if s != 'done')
  if failed:
    raise SweepFailed(
        f'{len(failed)} point(s) failed: {", ".join(failed)}; re-run the same '
        'command to retry them'
    )


if __name__ == '__main__':
  cli.run(main, define_flags)
