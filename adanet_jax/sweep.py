"""Hyperparameter sweeps through config overrides: plan, launch, resume, summarize.

A config file declares its sweeps next to itself:

  def get_sweeps():
    return {'targets': config_base.grid(**{'loss.target': [0.3, 0.5, 0.7], 'seed': [0]})}

Each point is a dict of config overrides. The launcher

  python -m adanet_jax.sweep --config=configs/digits.py[:args] --sweep=targets --root=DIR \
      [--parallel=N] [--config.x=y ...]

checks every override of every point against the config before anything runs,
prints the plan (the ordinary `adanet_jax.main` command of each point, also
written to DIR/commands.sh), and runs the points N at a time, one workdir per
point (DIR/<name from its overrides>). Re-running the same command resumes:
finished points are skipped, interrupted ones resume from their checkpoints,
failed ones are retried; failures are reported with the tail of their log and
the other points go on. `--summary_only` (and the end of every launch) writes
DIR/summary.md, DIR/summary.csv and DIR/accuracy_vs_gflops.png.
"""

import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import time

from absl import flags

from adanet_jax import config_checks, config_io, sweep_summary
from adanet_jax.config_base import ConfigError, run_cli

_CONFIG = flags.DEFINE_string('config', None, 'Config file, with optional :arg.')
_SWEEP = flags.DEFINE_string('sweep', None, 'Name of a sweep the config file defines.')
_ROOT = flags.DEFINE_string('root', None, 'Directory holding one workdir per point.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Points run at the same time.')
_PLAN_ONLY = flags.DEFINE_bool('plan_only', False, 'Print and write the plan, run nothing.')
_SUMMARY_ONLY = flags.DEFINE_bool('summary_only', False, 'Only summarize the workdirs in --root.')

STATUS_FILE = 'sweep_status.json'
LOG_FILE = 'log.txt'


def point_name(overrides: dict) -> str:
  """Workdir name of a point: `target-0.3_seed-0` from {'loss.target': 0.3, 'seed': 0}."""
  parts = [f'{key.split(".")[-1]}-{value}' for key, value in overrides.items()]
  return '_'.join(parts).replace('/', '-') or 'default'


def load_points(config_arg: str, sweep: str, common: dict) -> list[dict]:
  """The points of `sweep`, each checked against the config with `common` applied."""
  path = config_arg.rsplit(':', 1)[0] if ':' in os.path.basename(config_arg) else config_arg
  module = config_io.load_module(path)
  sweeps = module.get_sweeps() if hasattr(module, 'get_sweeps') else {}
  if sweep not in sweeps:
    raise ConfigError(f'--sweep={sweep!r} is not defined by {path}; its sweeps: '
                      f'{", ".join(sorted(sweeps)) or "none (no get_sweeps())"}')
  points = [dict(p) for p in sweeps[sweep]]
  names = [point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise ConfigError(f'sweep {sweep!r} has points with the same overrides: {names}')
  for point in points:
    config = config_io.load_config_file(config_arg)
    config_io.apply_overrides(config, {**common, **point})
    try:
      config_checks.check_values(config)
    except ConfigError as e:
      raise ConfigError(f'sweep point {point_name(point)}: {e}') from None
  return points


def main_command(config_arg: str, workdir: str, overrides: dict) -> list[str]:
  """The ordinary training command line of one point."""
  return [sys.executable, '-m', 'adanet_jax.main', f'--config={config_arg}',
          f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in overrides.items()]


def _die_with_parent():
  """Runs in the child before exec: SIGKILL it if the launcher dies."""
  ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _start(command, workdir):
  os.makedirs(workdir, exist_ok=True)
  log = open(os.path.join(workdir, LOG_FILE), 'a')
  return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          preexec_fn=_die_with_parent), log


def _status(workdir: str) -> dict:
  path = os.path.join(workdir, STATUS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, value: dict) -> None:
  with open(path, 'w') as f:
    json.dump(value, f, indent=1, sort_keys=True)


def check_root(root: str, manifest: dict) -> None:
  """Refuses a root that holds another sweep; records this one otherwise."""
  if os.path.exists(root) and not os.path.isdir(root):
    raise ConfigError(f'--root={root} is a file, not a directory')
  path = os.path.join(root, 'sweep.json')
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    if stored != manifest:
      raise ConfigError(f'--root={root} holds a different sweep ({stored["config"]} '
                        f'--sweep={stored["sweep"]} with other points or overrides); use '
                        'another root')
  else:
    os.makedirs(root, exist_ok=True)
    _write_json(path, manifest)


def run_sweep(config_arg: str, sweep: str, root: str, parallel: int, common: dict,
              plan_only: bool = False) -> dict:
  """Plans and runs (or resumes) a sweep; returns {point name: status}."""
  points = load_points(config_arg, sweep, common)  # all checks before anything starts
  root = os.path.abspath(root)
  jobs = {point_name(p): (p, os.path.join(root, point_name(p))) for p in points}
  commands = {name: main_command(config_arg, wd, {**common, **p})
              for name, (p, wd) in jobs.items()}
  check_root(root, {'config': config_arg, 'sweep': sweep, 'common': common, 'points': points})
  _print_plan(root, jobs, commands)
  if plan_only:
    return {}
  todo = [n for n in jobs if _status(jobs[n][1]).get('status') != 'done']
  print(f'{len(jobs) - len(todo)} of {len(jobs)} points already done', flush=True)
  results = {n: 'done' for n in jobs if n not in todo}
  running = {}
  while todo or running:
    while todo and len(running) < parallel:
      name = todo.pop(0)
      running[name] = (*_start(commands[name], jobs[name][1]), time.time())
    time.sleep(0.5)
    for name in [n for n, (proc, _, _) in running.items() if proc.poll() is not None]:
      proc, log, start = running.pop(name)
      log.close()
      results[name] = _finish(name, jobs[name], commands[name], proc.returncode, start)
      print(f'[{len(results)}/{len(jobs)}] {name}: {results[name]} '
            f'({time.time() - start:.0f} s)', flush=True)
  sweep_summary.write_summary(root)
  return results


def _print_plan(root, jobs, commands) -> None:
  lines = [' '.join(commands[name]) for name in jobs]
  with open(os.path.join(root, 'commands.sh'), 'w') as f:
    f.write('#!/bin/sh\n' + '\n'.join(lines) + '\n')
  print(f'sweep plan: {len(jobs)} points under {root} (also in {root}/commands.sh)')
  for name, line in zip(jobs, lines):
    state = _status(jobs[name][1]).get('status', 'new')
    print(f'  {name} [{state}]: {line}')
  sys.stdout.flush()


def _finish(name, job, command, returncode, start) -> str:
  overrides, workdir = job
  status = 'done' if returncode == 0 else 'failed'
  previous = _status(workdir)
  _write_json(os.path.join(workdir, STATUS_FILE), {
      'status': status, 'overrides': overrides, 'command': command, 'returncode': returncode,
      'wall_s': previous.get('wall_s', 0.0) + time.time() - start})
  if status == 'failed':
    with open(os.path.join(workdir, LOG_FILE)) as f:
      tail = f.read().splitlines()[-15:]
    print(f'point {name} failed (exit {returncode}); last lines of its log:\n  '
          + '\n  '.join(tail), flush=True)
  return status


def split_common_overrides(argv: list[str]) -> tuple[list[str], dict]:
  """Separates `--config.a.b=v` arguments (applied to every point) from the flags."""
  rest, common = [], {}
  for arg in argv:
    if arg.startswith('--config.'):
      if '=' not in arg:
        raise ConfigError(f'{arg!r} needs the form --config.<field>=<value>')
      key, value = arg[len('--config.'):].split('=', 1)
      common[key] = value
    else:
      rest.append(arg)
  return rest, common


def main(argv, common: dict):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  if _SUMMARY_ONLY.value:
    root = os.path.abspath(_ROOT.value or '')
    if not _ROOT.value or not os.path.isdir(root):
      raise ConfigError(f'--summary_only needs --root=<an existing sweep root>, not {_ROOT.value!r}')
    print(sweep_summary.write_summary(root))
    return
  for flag in (_CONFIG, _SWEEP, _ROOT):
    if not flag.value:
      raise ConfigError(f'--{flag.name} is required')
  if _PARALLEL.value < 1:
    raise ConfigError(f'--parallel={_PARALLEL.value} must be >= 1')
  results = run_sweep(_CONFIG.value, _SWEEP.value, _ROOT.value, _PARALLEL.value, common,
                      _PLAN_ONLY.value)
  failed = sorted(n for n, s in results.items() if s != 'done')
  if failed:
    sys.exit(f'{len(failed)} point(s) failed: {", ".join(failed)}; re-run the same command to '
             'retry them')


if __name__ == '__main__':
  try:
    sys.argv, _common = split_common_overrides(sys.argv)
  except ConfigError as e:
    sys.exit(f'error: {e}')
  run_cli(functools.partial(main, common=_common))
