"""The files of a run directory (workdir), their names and their readers.

  <workdir>/config.json        the resolved config of the run (process 0 writes it)
  <workdir>/config_history.jsonl   one JSON object per resume that changed the config
  <workdir>/metrics.jsonl      one JSON object per log or evaluation step
  <workdir>/checkpoints/       orbax checkpoints (`adanet_jax.train.checkpoints`)
  <workdir>/checkpoints_damaged/<step>-<time>   steps that failed to restore, set aside
  <workdir>/workdir.lock       the live run's lock (`adanet_jax.train.workdir_lock`)
  <workdir>/eval/class_block_rates_<mode>_step<N>.csv   per class x per block rates
  <workdir>/profile/           traces of `train.profile_steps` (`adanet_jax.train.profiling`)
  <workdir>/sweep_status.json  a sweep point's status (`adanet_jax.tools.sweep`)
  <workdir>/log.txt            a sweep point's console output
  <sweep root>/sweep.json      what a sweep root holds (config, sweep, points)
  <sweep root>/sweep.lock      the live sweep launcher's lock (as workdir.lock)

Everything that reads or writes one of these goes through this module.
"""

import contextlib
import json
import os

import ml_collections
import numpy as np

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError, reported_write

CONFIG_FILE = 'config.json'
CONFIG_HISTORY_FILE = 'config_history.jsonl'
METRICS_FILE = 'metrics.jsonl'
CHECKPOINTS_DIR = 'checkpoints'
# Checkpoint steps that failed to restore are moved here, never deleted.
DAMAGED_CHECKPOINTS_DIR = 'checkpoints_damaged'
EVAL_DIR = 'eval'
PROFILE_DIR = 'profile'
SWEEP_STATUS_FILE = 'sweep_status.json'
LOG_FILE = 'log.txt'
SWEEP_MANIFEST_FILE = 'sweep.json'
LOCK_FILE = 'workdir.lock'
SWEEP_LOCK_FILE = 'sweep.lock'

# The consequences of a failed write (`errors.reported_write`) during
# training and in a sweep.
STOPPED_RESUME = (
    'training stopped; run the same command again to resume from the last '
    'checkpoint'
)
SWEEP_STOPPED = 'the sweep stopped; run the same command again to resume it'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS_DIR)


@contextlib.contextmanager
def replaced_atomically(path: str, mode: str = 'w'):
  """Yields a file open on `path`.tmp, renamed to `path` when the block ends,
  so a reader never sees half a file. If anything fails (a full disk), the
  temporary file is removed and `path` stays as it was."""
  tmp = path + '.tmp'
  try:
    with open(tmp, mode) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):  # it may never have been created
      os.remove(tmp)
    raise


@contextlib.contextmanager
def reported_file(path: str, consequence: str, mode: str = 'w'):
  """`replaced_atomically`, a failed write reported as the one-line
  WorkdirWriteError naming `path`, the OS error and `consequence`
  (`errors.reported_write`)."""
  with reported_write(path, consequence), replaced_atomically(path, mode) as f:
    yield f


def write_json(path: str, value) -> None:
  """Writes `value` as JSON to `path` atomically (`replaced_atomically`)."""
  with replaced_atomically(path) as f:
    json.dump(value, f, indent=1, sort_keys=True)


def read_json(path: str, default=None, advice: str | None = None):
  """The JSON value in `path`, or `default` if there is no such file.

  With `advice`, a file that is not JSON is a one-line ConfigError ending
  in it (else the decoding error is raised).
  """
  if not os.path.exists(path):
    return default
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    if advice is None:
      raise
    raise ConfigError(
        f'{path} is damaged (not JSON: {e}); {advice}; nothing was changed'
    ) from None


def config_text(config: ml_collections.ConfigDict) -> str:
  """The resolved config as config.json holds it (`write_json`'s format)."""
  return json.dumps(
      json.loads(config.to_json_best_effort()), indent=1, sort_keys=True
  )


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  with replaced_atomically(os.path.join(workdir, CONFIG_FILE)) as f:
    f.write(config_text(config))


def read_stored_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config.json of `workdir` as `read_config` reads it; None if there
  is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  stored = read_json(path, advice=f'use another workdir, or delete {path}')
  return None if stored is None else config_lib.from_dict(stored)


def append_config_history(workdir: str, step: int, changes: dict) -> None:
  """Records that the run resumed at `step` with the config `changes`
  ({field: (old, new)}) in config_history.jsonl."""
  record = {'step': step, 'changed': {k: list(v) for k, v in changes.items()}}
  with open(os.path.join(workdir, CONFIG_HISTORY_FILE), 'a') as f:
    f.write(json.dumps(record) + '\n')


def read_config_history(workdir: str) -> list[dict]:
  """The records of config_history.jsonl, oldest first ([] if none)."""
  path = os.path.join(workdir, CONFIG_HISTORY_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config the trainer wrote (locked; older runs' configs are
  brought up to today's fields by `config_lib.from_dict`)."""
  stored = read_json(os.path.join(workdir, CONFIG_FILE))
  if stored is None:
    raise ConfigError(
        f'{workdir!r} has no {CONFIG_FILE}: not a workdir written by the trainer '
        '(train one with `make train`, or point at another workdir)'
    )
  return config_lib.from_dict(stored)


def read_metrics(workdir: str) -> list[dict]:
  """The records of `metrics.jsonl`, in order."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    raise ConfigError(
        f'{path} does not exist: is {workdir!r} a trained workdir?'
    )
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_metrics_so_far(workdir: str) -> list[dict]:
  """The records of a running trainer's `metrics.jsonl` ([] before it has
  one), without a last line it is still writing."""
  path = os.path.join(workdir, METRICS_FILE)
  try:
    with open(path) as f:
      lines = f.readlines()
  except FileNotFoundError:
    return []
  records = []
  for line in lines:
    try:
      records.append(json.loads(line))
    except ValueError:  # cut short: written at this moment, or by a kill
      continue
  return records


def drop_metrics_after(workdir: str, step: int) -> None:
  """Rewrites metrics.jsonl without the records past `step` (a resumed run
  logs those steps again) and without a line cut short by a kill,
  atomically; unchanged if there are none."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if line.endswith('\n') and record.get('step', 0) <= step:
      kept.append(line)
  if kept != lines:
    with replaced_atomically(path) as f:
      f.writelines(kept)


def last_eval(workdir: str, gate_mode: str) -> dict | None:
  """The last evaluation in `gate_mode`, keys without the `eval/<mode>/`
  prefix plus 'step'; None if the run has none (yet)."""
  if not os.path.isfile(os.path.join(workdir, METRICS_FILE)):
    return None
  prefix = f'eval/{gate_mode}/'
  records = [r for r in read_metrics(workdir) if prefix + 'accuracy' in r]
  if not records:
    return None
  last = records[-1]
  return {
      'step': last['step'],
      **{k[len(prefix) :]: v for k, v in last.items() if k.startswith(prefix)},
  }


def eval_record(workdir: str, step: int) -> dict | None:
  """The evaluation metrics.jsonl holds for `step` (its `eval/` keys, as the
  trainer returned them), or None; a line cut short by a kill is skipped."""
  found = None
  for record in read_metrics_so_far(workdir):
    evaluated = {k: v for k, v in record.items() if k.startswith('eval/')}
    if record.get('step') == step and evaluated:
      found = evaluated
  return found


def first_compile(workdir: str) -> dict | None:
  """The compile figures of the run's first launch (`run/compile_s`,
  `run/compile_cached` of its first log record), or None before it logged."""
  if not os.path.isfile(os.path.join(workdir, METRICS_FILE)):
    return None
  return next((r for r in read_metrics(workdir) if 'run/compile_s' in r), None)


def class_block_rates_path(workdir: str, mode: str, step: int) -> str:
  return os.path.join(
      workdir, EVAL_DIR, f'class_block_rates_{mode}_step{step:08d}.csv'
  )


def write_class_block_rates(
    workdir: str, step: int, mode: str, matrix: np.ndarray
) -> str:
  """Writes the per-class x per-block matrix as CSV, atomically; returns its
  path."""
  path = class_block_rates_path(workdir, mode, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  header = 'class,' + ','.join(f'block{i}' for i in range(matrix.shape[1]))
  rows = [
      f'{k},' + ','.join(f'{v:.6f}' for v in row)
      for k, row in enumerate(matrix)
  ]
  with replaced_atomically(path) as f:
    f.write('\n'.join([header] + rows) + '\n')
  return path


def sweep_status_path(workdir: str) -> str:
  return os.path.join(workdir, SWEEP_STATUS_FILE)


def read_sweep_status(workdir: str) -> dict:
  """A sweep point's status record ({} if it never ran)."""
  return read_json(sweep_status_path(workdir), {})


def write_sweep_status(workdir: str, status: dict) -> None:
  write_json(sweep_status_path(workdir), status)
