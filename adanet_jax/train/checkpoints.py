"""Checkpoints through orbax's CheckpointManager, and the resume order.

Resume order, in one place (`start_state`, then `Checkpointer.resume`): the
latest checkpoint in `workdir/checkpoints`, else the checkpoint
`config.init_from` names (a workdir, its checkpoints directory or one step
directory; parameters and BatchNorm statistics only; step and optimizer start
fresh; a `.pth`/`.pt` path is a PyTorch file, read by
`adanet_jax.model.torch_io`), else the freshly initialised state. An
`init_from` is read before anything is created, so a refused one leaves the
workdir as it was.

A workdir remembers the model it was trained with (`model.json` beside the
checkpoints) and the config (`config.json`). `check_workdir` refuses, before
anything is written, a run whose model differs, and a resume whose config
differs in a field that changes what a step means (the data order, the
schedule, the loss: every field but `FREE_FIELDS`) unless the change is
allowed; every change is recorded in `config_history.jsonl`.

Damage: resuming restores the newest step that restores completely. A step
that fails (a truncated or corrupted file, an empty or stray step directory)
is reported in one warning line and moved aside to
`workdir/checkpoints_damaged/<step>-<time>` (never deleted; orbax does not
look there), and the next older step is tried. `restore_from` (`load`,
`init_from`) falls back the same way without moving anything. A checkpoint
that cannot be written (full disk, I/O error) stops training at once with
`CheckpointWriteError`; the earlier checkpoints stay as they were.
"""

import contextlib
import json
import logging
import os
import shutil
import threading
import time

from absl import logging as absl_logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from adanet_jax.errors import (
    CheckpointWriteError,
    ConfigError,
    DamagedCheckpointError,
    os_error_text,
)
from adanet_jax.model import torch_io
from adanet_jax.train import rundir

logger = logging.getLogger(__name__)

# Seconds a failed save's background writes get to end (`_end_failed_save`).
END_FAILED_SAVE_S = 60.0
MODEL_FIELDS = ('model', 'gates.hidden', 'data.image_size', 'data.channels')
# Model fields that only choose an initialisation, or how the blocks are
# compiled: a checkpoint restores over them, so workdirs written before they
# existed keep loading.
INIT_ONLY_FIELDS = ('model.bn_gamma_init', 'model.scan_blocks')
# Config fields a resume may change without changing what a step means (the
# data order, the learning-rate schedule, the loss); every other field counts.
FREE_FIELDS = (
    'train.log_every_steps',
    'train.eval_every_epochs',
    'train.sync_every_steps',
    'train.profile_steps',
    'gates.eval_modes',
    'eval.batch_size',
    'checkpoint.every_steps',
    'checkpoint.keep',
    'data.data_dir',
    'init_from',  # read only when the workdir holds no checkpoint
) + INIT_ONLY_FIELDS


def model_signature(config: ml_collections.ConfigDict) -> dict:
  """The config values that determine the checkpoint's layout and meaning."""
  signature = {}
  for field in MODEL_FIELDS:
    value = config
    for key in field.split('.'):
      value = value[key]
    if isinstance(value, ml_collections.ConfigDict):
      for k, v in value.to_dict().items():
        if f'{field}.{k}' not in INIT_ONLY_FIELDS:
          signature[f'{field}.{k}'] = v
    else:
      signature[field] = value
  return json.loads(json.dumps(signature))


def step_dirs(directory: str) -> list[int]:
  """Steps of the step directories in `directory`, newest first, including
  empty or stray ones orbax would skip or trip over."""
  try:
    names = os.listdir(directory)
  except (FileNotFoundError, NotADirectoryError):  # no workdir (yet)
    return []
  return sorted(
      (
          int(n)
          for n in names
          if n.isdigit() and os.path.isdir(os.path.join(directory, n))
      ),
      reverse=True,
  )


@contextlib.contextmanager
def _quiet_orbax():
  """Silences orbax inside the block: its warnings about read-only managers
  and empty or stray step directories, and its logged tracebacks of a failed
  save or restore (we report those ourselves, in one line).

  Orbax logs through absl's logger, which our own modules do not use, so the
  block raises that logger's level above CRITICAL and restores it afterwards.
  """
  absl_logger = absl_logging.get_absl_logger()
  level = absl_logger.level
  absl_logger.setLevel(logging.CRITICAL + 1)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def _first_line(error: BaseException) -> str:
  """A one-line description of `error` (orbax and TensorStore errors span lines)."""
  text = next(
      (line.strip() for line in str(error).splitlines() if line.strip()), ''
  )
  text = text.split(' See full TensorStore details')[0]
  text = text if len(text) <= 200 else text[:197] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _restore_step(manager, step: int, state):
  """Restores `step` into the structure of `state`; None if it fails on any process."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  try:
    with _quiet_orbax():
      restored, error = (
          manager.restore(step, args=ocp.args.StandardRestore(abstract)),
          None,
      )
  except Exception as e:  # pylint: disable=broad-except  # any damage looks different
    restored, error = None, e
  if jax.process_count() > 1:  # a step counts only if it restored everywhere
    ok = multihost_utils.process_allgather(np.int32(error is None))
    if not np.all(ok) and error is None:
      restored, error = None, RuntimeError(
          'failed to restore on another process'
      )
  return restored, error


def check_model(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir whose checkpoints belong to a different model (or
  whose model.json is damaged). Reads only."""
  path = os.path.join(rundir.checkpoint_dir(workdir), 'model.json')
  stored = rundir.read_json(
      path, advice=f'use another workdir, or delete {path}'
  )
  if stored is None:
    return
  ours = model_signature(config)
  diffs = [
      f'{k}: checkpoint has {stored.get(k)!r}, config has {ours.get(k)!r}'
      for k in sorted(set(stored) | set(ours))
      if stored.get(k) != ours.get(k)
  ]
  if diffs:
    raise ConfigError(
        f'workdir {workdir} holds checkpoints of a different model ('
        + '; '.join(diffs)
        + '): use another workdir; nothing was changed'
    )


def check_workdir(
    workdir: str,
    config: ml_collections.ConfigDict,
    allow_config_change: bool = False,
) -> dict:
  """Refuses a workdir of a different model (`check_model`), or one whose
  stored config differs in a field that changes what a step means (any
  field but `FREE_FIELDS`) unless `allow_config_change`. Reads only.

  Returns:
    {field: (stored value, new value)} of every field the resume changes
    ({} for a workdir without checkpoints: its run starts afresh).

  Raises:
    ConfigError: another model, a damaged model.json or config.json, or a
      change of meaning that is not allowed; nothing was changed.
  """
  check_model(workdir, config)
  steps = step_dirs(rundir.checkpoint_dir(workdir))
  if not steps:
    return {}
  changes = config_changes(rundir.read_stored_config(workdir), config)
  meaning = [k for k in changes if k not in FREE_FIELDS]
  if meaning and not allow_config_change:
    listed = '; '.join(
        f'{k}: {changes[k][0]!r} -> {changes[k][1]!r}' for k in meaning
    )
    raise ConfigError(
        f'workdir {workdir} holds checkpoints (up to step {steps[0]}) of a run '
        f'with another config ({listed}): resuming would change what its '
        'steps mean; use another workdir, or pass --allow_config_change to '
        'continue it with the new values (recorded in '
        f'{rundir.CONFIG_HISTORY_FILE}); nothing was changed'
    )
  return changes


def config_changes(
    stored: ml_collections.ConfigDict | None, config: ml_collections.ConfigDict
) -> dict:
  """{field: (stored value, new value)} of the fields that differ, in field
  order, values as config.json holds them ({} without a stored config)."""
  if stored is None:
    return {}
  old, new = _flat(stored), _flat(config)
  return {
      k: (old.get(k), new.get(k))
      for k in sorted(set(old) | set(new))
      if old.get(k) != new.get(k)
  }


def _flat(config: ml_collections.ConfigDict) -> dict:
  def walk(value, prefix):
    if isinstance(value, dict):
      for k, v in value.items():
        yield from walk(v, f'{prefix}{k}.')
    else:
      yield prefix[:-1], value

  return dict(walk(json.loads(config.to_json_best_effort()), ''))


class Checkpointer:
  """Saves and restores the train state of one workdir."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    check_model(workdir, config)
    self.workdir = os.path.abspath(workdir)
    self.directory = rundir.checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.checkpoint.keep, create=True
    )
    # One unnamed item, fixed here: else orbax guesses it from the first step
    # directory it reads, and an empty one makes it guess wrong for good.
    with _quiet_orbax():  # its warnings about empty or stray step directories
      self.manager = ocp.CheckpointManager(
          self.directory,
          options=options,
          item_handlers=ocp.StandardCheckpointHandler(),
      )
    if jax.process_index() == 0:
      # Written aside and renamed: the other processes may be reading it in
      # check_workdir right now, and must never see it half written.
      path = os.path.join(self.directory, 'model.json')
      try:
        rundir.write_json(path, model_signature(config))
      except OSError as e:
        raise CheckpointWriteError(
            f'cannot write {path}: {os_error_text(e) or e}'
        ) from None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def resume(self, start):
    """The newest intact checkpoint (`restore_newest_intact`), else `start`
    (`start_state`)."""
    restored = self.restore_newest_intact(start)
    return start if restored is None else restored

  def save(self, step: int, state) -> None:
    """Writes the checkpoint of `step` and waits for it, so that a failed
    write stops training here, not one checkpoint interval later.

    A failed write closes the manager (no later save is possible)."""
    before = set(threading.enumerate())
    try:
      with _quiet_orbax():
        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # orbax wraps OSError variously
      self._end_failed_save(before)
      self._remove_partial(step)
      # What is on disk: orbax's own list already dropped the steps the
      # failed save would have replaced (`keep`).
      kept = sorted(s for s in step_dirs(self.directory) if s != step)
      raise CheckpointWriteError(
          f'writing the checkpoint of step {step} to {self.directory}/{step} failed ('
          f'{os_error_text(e) or _first_line(e)}); training stopped; earlier checkpoints kept: '
          f'{", ".join(map(str, kept)) or "none"}'
      ) from None

  def _end_failed_save(self, before: set) -> None:
    """Lets orbax's background writes of a failed save end, quietly.

    Orbax writes the arrays in threads of its own and reports the first
    failure; the others go on writing (into the directory we are about to
    remove) and log their own failures with a traceback when they end. Closing
    the manager ends its thread pools; the threads the save started are then
    awaited (up to END_FAILED_SAVE_S) while orbax's logs are off.
    """
    deadline = time.monotonic() + END_FAILED_SAVE_S
    with _quiet_orbax():
      with contextlib.suppress(Exception):  # the failure is reported already
        self.manager.close()
      for thread in set(threading.enumerate()) - before:
        # Orbax's threads re-raise their own failure on join.
        with contextlib.suppress(Exception):
          thread.join(timeout=max(deadline - time.monotonic(), 0.0))

  def _remove_partial(self, step: int) -> None:
    """Removes the unfinished (temporary) directory of a failed save: it is
    no checkpoint, only in the way of the space a rerun needs."""
    if jax.process_index() == 0:
      # Orbax's own account of its unfinished directories: their naming is its business.
      for unfinished in ocp.step.all_temporary_paths(self.directory):
        if unfinished.get_final().name == str(step):
          shutil.rmtree(unfinished.get(), ignore_errors=True)

  def restore(self, state, step: int | None = None):
    """Restores into the shapes, dtypes and shardings of `state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    with _quiet_orbax():
      return self.manager.restore(
          self.latest_step() if step is None else step,
          args=ocp.args.StandardRestore(abstract),
      )

  def restore_newest_intact(self, state):
    """Restores the newest step that restores completely, moving newer
    damaged steps aside (module docstring).

    Args:
      state: the train state whose structure, dtypes and shardings to restore into.

    Returns:
      The restored state, or None if the workdir holds no step directory.
    """
    damaged = []
    for step in step_dirs(self.directory):
      restored, error = _restore_step(self.manager, step, state)
      if restored is not None:
        break
      damaged.append((step, error))
    else:
      # every step fails: more likely our fault than the disk's; move nothing
      if damaged:
        raise DamagedCheckpointError(
            f'no checkpoint in {self.directory} restores (step {damaged[0][0]}: '
            f'{_first_line(damaged[0][1])}); nothing was moved'
        )
      return None
    for bad, error in damaged:
      self._move_aside(bad, error, restored_step=step)
    if damaged:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(
            'adanet_jax.train.checkpoints.moved_aside'
        )
      self.manager.reload()
    return restored

  def _move_aside(
      self, step: int, error: BaseException, restored_step: int
  ) -> None:
    target = os.path.join(
        self.workdir,
        rundir.DAMAGED_CHECKPOINTS_DIR,
        f'{step}-{time.strftime("%Y%m%dT%H%M%S")}',
    )
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), target)
    logger.warning(
        'checkpoint step %d does not restore (%s); moved to %s, resuming from '
        'step %d',
        step,
        _first_line(error),
        target,
        restored_step,
    )

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def check_init_from(path: str) -> None:
  """Refuses an `init_from` that names nothing loadable, before anything is
  created: a file must be a PyTorch file (by its contents), anything else a
  workdir, a checkpoints directory or a step directory."""
  path = os.path.expanduser(path)
  if torch_io.is_torch_file(path):
    return
  if os.path.isfile(path):
    raise ConfigError(f'init_from={path!r} {torch_io.NOT_TORCH_OR_CHECKPOINT}')
  resolve_checkpoint_dir(path)


def resolve_checkpoint_dir(path: str) -> tuple[str, int | None]:
  """(checkpoints directory, step) of a workdir or checkpoints directory
  (step None: the newest) or of one step directory inside it.

  Raises ConfigError if none exists (before anything is created).
  """
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(rundir.checkpoint_dir(path)):
    return rundir.checkpoint_dir(path), None
  if not os.path.isdir(path):
    raise ConfigError(
        f'init_from={path!r} is not a workdir or checkpoint directory'
    )
  name = os.path.basename(path)
  if name.isdigit():  # a step directory, as `adanet_jax.load` takes it
    return os.path.dirname(path), int(name)
  return path, None


def restore_from(path: str, state, step: int | None = None):
  """Restores checkpoint `step` (default: the step of a step directory, else
  the newest that restores) of a workdir, checkpoint directory or step
  directory into the structure of `state`, read-only.

  A damaged newer step is skipped with one warning line; a damaged `step`
  asked for by number, or no intact step at all, raises DamagedCheckpointError
  naming the damage and the other steps.
  """
  path, step_of_path = resolve_checkpoint_dir(path)
  step = step_of_path if step is None else step
  options = ocp.CheckpointManagerOptions(
      read_only=True, create=False, save_interval_steps=0
  )
  with _quiet_orbax():  # its "read only" warnings
    manager = ocp.CheckpointManager(
        path, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )
  present = step_dirs(path)
  if step is not None and step not in present:
    raise ConfigError(
        f'{path!r} holds no checkpoint at step {step}; steps there: '
        f'{", ".join(map(str, sorted(present))) or "none"}'
    )
  if not present:
    raise ConfigError(f'{path!r} holds no checkpoint')
  damaged = []
  try:
    for candidate in [step] if step is not None else present:
      restored, error = _restore_step(manager, candidate, state)
      if restored is not None:
        for bad, bad_error in damaged:
          logger.warning(
              'checkpoint step %d of %s does not restore (%s); loaded step '
              '%d instead',
              bad,
              path,
              _first_line(bad_error),
              candidate,
          )
        return restored
      damaged.append((candidate, error))
  finally:
    manager.close()
  others = [s for s in sorted(present) if s not in dict(damaged)]
  raise DamagedCheckpointError(
      f'checkpoint step {damaged[0][0]} of {path} is damaged ({_first_line(damaged[0][1])}); '
      + (
          f'other steps there: {", ".join(map(str, others))} (load one as {path}/<step>)'
          if others
          else 'no other step restores'
      )
  )


def start_state(workdir: str, state, init_from: str):
  """The state a run in `workdir` starts from unless a checkpoint of the
  workdir restores over it (`Checkpointer.resume`): `state` with the
  parameters and BatchNorm statistics of `init_from` (a checkpoint, or a
  PyTorch file: `torch_io`) if the workdir holds no checkpoint, else `state`.

  Reads only: call it before anything is created, so that a refused
  `init_from` leaves the workdir as it was.
  """
  if not init_from or step_dirs(rundir.checkpoint_dir(workdir)):
    return state
  init_from = os.path.expanduser(init_from)
  if torch_io.is_torch_file(init_from):
    variables = torch_io.restore_variables(
        init_from, {'params': state.params, 'batch_stats': state.batch_stats}
    )
  else:
    variables = restore_from(init_from, state)
    variables = {
        'params': variables.params,
        'batch_stats': variables.batch_stats,
    }
  return state.replace(
      params=variables['params'], batch_stats=variables['batch_stats']
  )
