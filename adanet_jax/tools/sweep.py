"""Hyperparameter sweeps through config overrides: plan, launch, resume, summarize.

A config file declares its sweeps next to itself:

  def get_sweeps():
    from adanet_jax.tools.sweep import grid
    return {'targets': grid(**{'loss.target': [0.3, 0.5, 0.7], 'seed': [0]})}

Each point is a dict of config overrides. The launcher

  python -m adanet_jax.tools.sweep --config=configs/digits.py[:args] --sweep=targets --root=DIR \
      [--parallel=N] [--progress_every=SECONDS] [--config.x=y ...] \
      [--launcher=slurm --slurm.partition=P --slurm.time=MIN --slurm.gpus_per_task=G]

checks every override of every point against the config before anything runs,
prints the plan (the ordinary `adanet_jax.main` command of each point,
shell-quoted, also written to DIR/commands.sh; each marked new, done, failed
or `resume from step N`), and runs the points N at a time, one workdir per
point (DIR/<name from its overrides>, `point_name`), printing a line per
running point every --progress_every seconds (`sweep_progress`).
Re-running the same command resumes: finished points are skipped,
interrupted ones resume from their checkpoints, failed ones are retried;
failures are reported with the tail of their log and the other points go on.
A root holds one sweep (DIR/sweep.json; another is refused, naming the
differing overrides) and one live launcher (DIR/sweep.lock, as a workdir's
lock).
`--summary_only` (of a sweep root only) and the end of every launch write
DIR/summary.md, DIR/summary.csv and DIR/accuracy_vs_gflops.png and print
their paths. Ctrl-C (or SIGTERM) stops the running points (SIGTERM, then
SIGKILL after STOP_GRACE_S) and prints the command that resumes.

Points run as child processes (`LocalLauncher`, the default) or as one
SLURM job each (`--launcher=slurm`, `adanet_jax/tools/slurm_launcher.py`);
everything else is the same for both, except that a SLURM point stopped by
its time limit or a preemption (exit 75, saved) is submitted again at once,
as long as each job advanced its newest checkpoint step; a job stopped at the
step it started from fails the point (its time limit is too short to train).
"""

import ctypes
import functools
import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

from absl import flags

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError, ExpectedError, Preempted, reported_write
from adanet_jax.runtime import cli
from adanet_jax.tools import sweep_progress, sweep_summary
from adanet_jax.train import checkpoints, checks, rundir, workdir_lock

STOP_GRACE_S = 20.0  # seconds a stopped point gets between SIGTERM and SIGKILL
POLL_S = 0.5
# Workdir names keep these characters: those a shell needs no quotes for,
# but the comma and the slash. Longer names end in a hash of the overrides.
_UNSAFE_IN_NAME = re.compile(r'[^A-Za-z0-9_@%+=:.-]')
MAX_NAME_CHARS = 80


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
      progress_every=flags.DEFINE_float(
          'progress_every',
          30.0,
          'Seconds between the progress lines of the running points '
          '(0: none).',
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
  """Workdir name of a point: `target-0.3_seed-0` from {'loss.target': 0.3,
  'seed': 0}; `targets-0.5-0.7` from {'loss.targets': (0.5, 0.7)}.

  Shell-safe (other characters become '-') and at most MAX_NAME_CHARS long
  (a longer name is cut and ends in 8 hex digits of a hash of the overrides).
  """
  parts = [
      f'{key.split(".")[-1]}-{_name_text(value)}'
      for key, value in overrides.items()
  ]
  name = _UNSAFE_IN_NAME.sub('-', '_'.join(parts)) or 'default'
  if len(name) > MAX_NAME_CHARS:
    stored = json.dumps(overrides, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(stored).hexdigest()[:8]
    name = f'{name[:MAX_NAME_CHARS - 9]}-{digest}'
  return name


def _name_text(value) -> str:
  if isinstance(value, (tuple, list)):  # as stored in JSON, a list
    return '-'.join(_name_text(v) for v in value) or 'none'
  return str(value)


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
  twins = sorted({n for n in names if names.count(n) > 1})
  if twins:
    raise ConfigError(
        f'sweep {sweep!r} has several points named {", ".join(twins)} (the '
        'same overrides, or overrides that differ only in characters a '
        'workdir name leaves out)'
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
  # PR_SET_PDEATHSIG
  ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)


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
  workdir)` returning a job with `poll()` and `stop()`, `describe(job)` and
  `resubmits_stopped`; see also
  `adanet_jax.tools.slurm_launcher.SlurmLauncher`."""

  name = 'local'
  # A point's status 75 here comes from a signal someone sent it: a failure
  # that the next launch retries, not a reason to start it again now.
  resubmits_stopped = False

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
  """Refuses a root that holds another sweep; records this one otherwise.

  The sweeps are compared as stored (JSON: a tuple is a list), their points
  in any order.

  Raises:
    ConfigError: naming the differences.
  """
  path = os.path.join(root, rundir.SWEEP_MANIFEST_FILE)
  if not os.path.exists(path):
    with reported_write(path, rundir.SWEEP_STOPPED):
      rundir.write_json(path, manifest)
    return
  stored = rundir.read_json(path)
  differences = _differences(
      stored, json.loads(json.dumps(manifest, default=str))
  )
  if differences:
    raise ConfigError(
        f'--root={root} holds a different sweep ({stored["config"]} '
        f'--sweep={stored["sweep"]}): {"; ".join(differences)}; use another '
        'root'
    )


def _differences(stored: dict, new: dict) -> list[str]:
  """What differs between two sweep manifests, as 'stored -> now'."""
  found = [
      f'--{key}={stored[key]} -> --{key}={new[key]}'
      for key in ('config', 'sweep')
      if stored[key] != new[key]
  ]
  old, now = stored['common'], new['common']
  found += [
      f'--config.{key}: {old.get(key, "unset")} -> {now.get(key, "unset")}'
      for key in sorted(set(old) | set(now))
      if old.get(key) != now.get(key)
  ]
  return found + _point_differences(stored['points'], new['points'])


def _point_differences(stored: list[dict], new: list[dict]) -> list[str]:
  """The overrides of the points that differ: per key, the values stored ->
  now (JSON text, in the sweep's order); where only the combinations
  differ, the points themselves."""
  # JSON keeps no key order: a point is its sorted overrides.
  old, now = (
      {json.dumps(p, sort_keys=True): p for p in points}
      for points in (stored, new)
  )
  if old.keys() == now.keys():
    return []
  found = []
  for key in sorted({k for p in stored + new for k in p}):
    values = [
        list(dict.fromkeys(json.dumps(p[key]) for p in points if key in p))
        for points in (stored, new)
    ]
    if set(values[0]) != set(values[1]):
      found.append(
          f'{key} in the points: {", ".join(values[0]) or "none"} -> '
          f'{", ".join(values[1]) or "none"}'
      )
  if found:
    return found
  for what, points in (
      (
          'points only in the stored sweep',
          [old[k] for k in old if k not in now],
      ),
      ('points only in this one', [now[k] for k in now if k not in old]),
  ):
    if points:
      listed = ', '.join(
          '(' + ' '.join(f'{k}={json.dumps(v)}' for k, v in p.items()) + ')'
          for p in points
      )
      found.append(f'{what}: {listed}')
  return found


def run_sweep(
    config_arg: str,
    sweep: str,
    root: str,
    parallel: int,
    common: dict,
    plan_only: bool = False,
    make_launcher=None,
    progress_every: float = 30.0,
) -> dict:
  """Plans and runs (or resumes) a sweep.

  Args:
    config_arg, sweep, root, parallel, common, plan_only: as the flags.
    make_launcher: makes the launcher of the points from the absolute root
      (default `LocalLauncher`; the SLURM launcher keeps its files there).
    progress_every: seconds between the progress lines of the running
      points (`sweep_progress`; 0: none).

  Returns:
    {point name: status}.

  Raises:
    SweepInterrupted: on Ctrl-C or SIGTERM, after the running points stopped.
    WorkdirInUseError: another launcher runs on `root`.
    ConfigError: a bad point or override, a root that holds another sweep or
      cannot be created.
    WorkdirWriteError: a file of the sweep (its lock included) could not be
      written.
  """
  # all checks before anything starts
  points = load_points(config_arg, sweep, common)
  given, root = root, os.path.abspath(root)
  jobs = {point_name(p): (p, os.path.join(root, point_name(p))) for p in points}
  commands = {
      name: main_command(config_arg, wd, {**common, **p})
      for name, (p, wd) in jobs.items()
  }
  try:
    os.makedirs(root, exist_ok=True)
  except OSError as e:
    raise ConfigError(
        f'--root={given}: cannot create it ({e.strerror})'
    ) from None
  # One launcher per root: two would each count the other's points as failed.
  with workdir_lock.acquire_local(
      root, rundir.SWEEP_LOCK_FILE, 'sweep root', 'sweep'
  ):
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
    results = _run_points(
        jobs,
        commands,
        parallel,
        (make_launcher or LocalLauncher)(root),
        sweep_progress.ProgressReporter(progress_every),
    )
    sweep_summary.write_summary(root)
  return results


def _run_points(
    jobs: dict, commands: dict, parallel: int, launcher, reporter
) -> dict:
  """Runs the points not done yet, `parallel` at a time; {name: status}."""
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
        # read before the job can save
        started_at = _checkpoint_step(jobs[name][1])
        running[name] = (
            launcher.start(name, commands[name], jobs[name][1]),
            time.time(),
            started_at,
        )
        print(
            f'started {name} ({launcher.describe(running[name][0])})',
            flush=True,
        )
      time.sleep(POLL_S)
      reporter.report({name: jobs[name][1] for name in running})
      for name in list(running):
        code = running[name][0].poll()
        if code is None:
          continue
        _, start, started_at = running.pop(name)
        why = None
        if code == Preempted.exit_code and launcher.resubmits_stopped:
          stopped_at = _checkpoint_step(jobs[name][1])
          # Only while it advances: a job stopped before its first step
          # would otherwise be submitted again forever.
          if stopped_at > started_at:
            todo.insert(0, name)
            print(
                f'{name}: stopped by its time limit or a preemption after '
                f'saving step {stopped_at} (exit 75); submitting it again',
                flush=True,
            )
            continue
          why = (
              f'exit 75: stopped at step {stopped_at}, where its job '
              'started, so it is not submitted again; its --slurm.time is '
              'too short to train a step after start-up'
          )
        results[name] = _finish(
            name, jobs[name], commands[name], code, start, why
        )
        print(
            f'[{len(results)}/{len(jobs)}] {name}: {results[name]} '
            f'({time.time() - start:.0f} s)',
            flush=True,
        )
  except KeyboardInterrupt:
    for job, *_ in running.values():
      job.stop()
    raise SweepInterrupted(f'{len(running)} running point(s) stopped') from None
  except ExpectedError:  # a write of the sweep's own files failed
    for job, *_ in running.values():
      job.stop()  # each saves a checkpoint to resume from
    raise
  return results


def _print_plan(root, jobs, commands) -> None:
  lines = [shlex.join(commands[name]) for name in jobs]
  path = os.path.join(root, 'commands.sh')
  with rundir.reported_file(path, rundir.SWEEP_STOPPED) as f:
    f.write('#!/bin/sh\n' + '\n'.join(lines) + '\n')
  print(
      f'sweep plan: {len(jobs)} points under {root} (also in {root}/commands.sh)'
  )
  for name, line in zip(jobs, lines):
    print(f'  {name} [{_plan_state(jobs[name][1])}]: {line}')
  sys.stdout.flush()


def _plan_state(workdir: str) -> str:
  """`new`, `done`, `failed`, `resume from step N` (interrupted) or `failed,
  resume from step N`: N the newest checkpoint step, which the trainer tries
  first (orbax's unfinished directories are no step: `step_dirs`)."""
  status = rundir.read_sweep_status(workdir).get('status', 'new')
  steps = checkpoints.step_dirs(rundir.checkpoint_dir(workdir))
  if status == 'done' or not steps:
    return status
  resume = f'resume from step {steps[0]}'
  return resume if status == 'new' else f'{status}, {resume}'


def _checkpoint_step(workdir: str) -> int:
  """The newest checkpoint step in `workdir` (0: none), where a point
  resumes."""
  steps = checkpoints.step_dirs(rundir.checkpoint_dir(workdir))
  return steps[0] if steps else 0


def _finish(name, job, command, returncode, start, why=None) -> str:
  overrides, workdir = job
  # A trainer that ends well has written its config: without it the workdir
  # was deleted (and maybe recreated) under the point.
  trained = os.path.exists(os.path.join(workdir, rundir.CONFIG_FILE))
  status = 'done' if returncode == 0 and trained else 'failed'
  previous = rundir.read_sweep_status(workdir)
  with reported_write(rundir.sweep_status_path(workdir), rundir.SWEEP_STOPPED):
    os.makedirs(workdir, exist_ok=True)
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
    _report_failure(name, workdir, returncode, why)
  return status


def _report_failure(
    name: str, workdir: str, returncode: int, why: str | None = None
) -> None:
  """Prints why a point failed and the tail of its log."""
  log = os.path.join(workdir, rundir.LOG_FILE)
  tail = []
  if os.path.exists(log):  # the workdir may have been deleted
    with open(log) as f:
      tail = f.read().splitlines()[-15:]
  if why is None:
    why = f'exit {returncode}' if returncode else 'exit 0, its workdir emptied'
  shown = (
      'last lines of its log:\n  ' + '\n  '.join(tail)
      if tail
      else f'no {rundir.LOG_FILE} left'
  )
  print(f'point {name} failed ({why}); {shown}', flush=True)


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
  if args.root:  # a shell leaves `--root=~/x` unexpanded
    args.root = os.path.expanduser(args.root)
  if args.summary_only:
    cli.require(args, 'root')
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
      raise ConfigError(
          f'--root={args.root} is not a directory: nothing to summarize'
      )
    if not os.path.exists(os.path.join(root, rundir.SWEEP_MANIFEST_FILE)):
      what = (
          'a training workdir, not a sweep root'
          if os.path.exists(os.path.join(root, rundir.CONFIG_FILE))
          else 'not a sweep root'
      )
      raise ConfigError(
          f'--root={args.root} is {what} (no {rundir.SWEEP_MANIFEST_FILE}): '
          'nothing to summarize'
      )
    print(sweep_summary.write_summary(root))
    _print_outputs(root)
    return
  cli.require(args, 'config', 'sweep', 'root')
  parallel = args.parallel
  if parallel is None:
    # SLURM's scheduler decides
    parallel = sys.maxsize if args.launcher == 'slurm' else 1
  if parallel < 1:
    raise ConfigError(f'--parallel={args.parallel} must be >= 1')
  if not args.progress_every >= 0:  # NaN included
    raise ConfigError(
        f'--progress_every={args.progress_every} must be >= 0 (seconds; 0: '
        'no progress lines)'
    )
  if os.path.exists(args.root) and not os.path.isdir(args.root):
    raise ConfigError(f'--root={args.root} is a file, not a directory')
  make_launcher = _launcher_factory(args)
  # stop the points as on Ctrl-C
  signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
  try:
    results = run_sweep(
        args.config,
        args.sweep,
        args.root,
        parallel,
        args.overrides,
        args.plan_only,
        make_launcher,
        args.progress_every,
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
