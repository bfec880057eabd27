"""Checkpoints through orbax's CheckpointManager, and the resume order.

Resume order, in one place (`restore_or_init`): the latest checkpoint in
`workdir/checkpoints`, else the checkpoint `config.init_from` names
(parameters and BatchNorm statistics only; step and optimizer start fresh;
a `.pth`/`.pt` path is a PyTorch file, read by `adanet_jax.torch_io`), else
the freshly initialised state.

A workdir remembers the model it was trained with (`model.json` beside the
checkpoints); a run whose model config differs is refused before anything is
written.
"""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from adanet_jax import torch_io
from adanet_jax.config_base import ConfigError

MODEL_FIELDS = ('model', 'gates.hidden', 'data.image_size', 'data.channels')
# Model fields that only choose an initialisation: a checkpoint restores over
# them, so workdirs written before they existed keep loading.
INIT_ONLY_FIELDS = ('model.bn_gamma_init',)


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


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir whose checkpoints belong to a different model."""
  path = os.path.join(checkpoint_dir(workdir), 'model.json')
  if not os.path.exists(path):
    return
  with open(path) as f:
    stored = json.load(f)
  ours = model_signature(config)
  diffs = [f'{k}: checkpoint has {stored.get(k)!r}, config has {ours.get(k)!r}'
           for k in sorted(set(stored) | set(ours)) if stored.get(k) != ours.get(k)]
  if diffs:
    raise ConfigError(f'workdir {workdir} holds checkpoints of a different model ('
                      + '; '.join(diffs) + '): use another workdir; nothing was changed')


class Checkpointer:
  """Saves and restores the train state of one workdir."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    check_workdir(workdir, config)
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoint.keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    if jax.process_index() == 0:
      # Written aside and renamed: the other processes may be reading it in
      # check_workdir right now, and must never see it half written.
      path = os.path.join(self.directory, 'model.json')
      with open(path + '.tmp', 'w') as f:
        json.dump(model_signature(config), f, indent=1, sort_keys=True)
      os.replace(path + '.tmp', path)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, state, step: int | None = None):
    """Restores into the shapes, dtypes and shardings of `state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.manager.restore(self.latest_step() if step is None else step,
                                args=ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_from(path: str, state, step: int | None = None):
  """Restores checkpoint `step` (default the latest) of a workdir or checkpoint
  directory into the structure of `state`, read-only."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  if not os.path.isdir(path):
    raise ConfigError(f'init_from={path!r} is not a workdir or checkpoint directory')
  manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise ConfigError(f'{path!r} holds no checkpoint' + ('' if step is None else f' at step {step}'))
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  manager.close()
  return restored


def restore_or_init(checkpointer: Checkpointer, state, init_from: str):
  """The resume order: latest checkpoint, else `init_from`, else `state`."""
  if checkpointer.latest_step() is not None:
    return checkpointer.restore(state)
  if init_from and torch_io.is_torch_file(init_from):
    variables = torch_io.restore_variables(
        init_from, {'params': state.params, 'batch_stats': state.batch_stats})
    return state.replace(params=variables['params'], batch_stats=variables['batch_stats'])
  if init_from:
    restored = restore_from(init_from, state)
    return state.replace(params=restored.params, batch_stats=restored.batch_stats)
  return state
