"""PyTorch weights in and out: torchvision ResNets and reference-layout ConvNet-AIG.

A PyTorch file is recognised by its first bytes, whatever its name
(`model.pth`, the authors' `checkpoint.pth.tar`): `is_torch_file`.

Import (`restore_variables`, used by `config.init_from` and
`adanet_jax.load(path, config=...)` for a PyTorch file):

- a torchvision ResNet-50/101/152 `state_dict` into the gated ImageNet model,
  as the reference's `train_img.py --pretrained`: `fc` becomes the head,
  `downsample` the projection shortcut, and the gates keep their fresh init;
- a `state_dict` in the reference ConvNet-AIG layout (see
  `adanet_jax/torch_model.py`), for the CIFAR, ImageNet and wide families,
  or a training checkpoint holding one under `state_dict`.

Keys may carry DataParallel's `module.` prefix; `num_batches_tracked` is
accepted and not used (PyTorch 0.3.1, which the reference pins, had none).
Every other tensor must be used exactly once and every leaf of the model
written once: a missing, unexpected or wrongly shaped tensor raises a
ConfigError of one line naming it, and nothing is loaded.

Export (`export_checkpoint`): a checkpoint dict as the reference's training
scripts save it, `{'state_dict': ..., 'config': ..., 'step': ...}`: the
parameters and BatchNorm statistics as a reference-layout `state_dict` that
`adanet_jax.torch_model` or the reference model loads with
`load_state_dict(strict=True)`, the run's config as JSON values, and the
step. `torch.load(path, weights_only=True)` reads it.

The mapping is derived from the names in our variable tree, so one table
serves every family: `stem_conv`/`stem_bn` <-> `conv1`/`bn1`,
`stage{s}_block{i}` <-> `layer{s}.{i}`, `shortcut_conv`/`shortcut_bn` <->
`shortcut.0`/`shortcut.1`, the gate's `fc1`, `fc1_bn`, `fc2` <-> the block's
`fc1` (1x1 conv), `fc1bn`, `fc2`, `head` <-> `linear`, `final_bn` <->
`bn_final`. Conv kernels HWIO <-> OIHW, dense kernels (in, out) <-> (out, in).

torch is imported only inside the functions that need it.
"""

import collections
import dataclasses
import json
import os
import re
from typing import Any, Callable, Mapping
import zipfile

import jax
import ml_collections
import numpy as np

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError, os_error_text

# torch.save's zip format (PyTorch >= 1.6) and, before it, a pickle (protocol
# byte 0x80) whose first object is torch's magic number (a 10-byte LONG1).
_ZIP_MAGIC = b'PK\x03\x04'
_LEGACY_MAGIC = b'\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'
NOT_TORCH_OR_CHECKPOINT = (
    'is neither a PyTorch file (written by torch.save) nor a workdir or '
    'checkpoint directory'
)
_MODULE_NAMES = {
    'stem_conv': 'conv1',
    'stem_bn': 'bn1',
    'head': 'linear',
    'final_bn': 'bn_final',
    'shortcut_conv': 'shortcut.0',
    'shortcut_bn': 'shortcut.1',
    'fc1_bn': 'fc1bn',
    'gate': None,
}
_BN_LEAVES = (
    ('params', 'scale', 'weight'),
    ('params', 'bias', 'bias'),
    ('batch_stats', 'mean', 'running_mean'),
    ('batch_stats', 'var', 'running_var'),
)


def is_torch_file(path: str) -> bool:
  """Whether `path` is a file written by `torch.save`, from its bytes alone.

  Nothing is unpickled: a zip archive holding `<name>/data.pkl` (or one too
  damaged to list, so that reading it reports the damage), or a pickle that
  opens with torch's magic number. A directory is never one.

  Raises:
    ConfigError (one line) if the file exists but cannot be read.
  """
  path = os.path.expanduser(str(path))
  if not os.path.isfile(path):
    return False
  try:
    with open(path, 'rb') as f:
      head = f.read(len(_LEGACY_MAGIC) + 2)
  except OSError as e:
    raise ConfigError(
        f'cannot read {path!r}: {os_error_text(e) or e}'
    ) from None
  if head.startswith(_ZIP_MAGIC):
    try:
      with zipfile.ZipFile(path) as archive:
        return any(n.endswith('/data.pkl') for n in archive.namelist())
    except zipfile.BadZipFile:
      return True
  return head[:1] == b'\x80' and head[2:] == _LEGACY_MAGIC


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One tensor of the reference layout and the leaf of ours it maps to."""

  key: str  # reference state_dict key
  collection: str  # 'params' or 'batch_stats'
  path: tuple[str, ...]  # path of the leaf inside the collection
  shape: tuple[int, ...]  # the tensor's shape in the reference layout
  to_ours: Callable  # reference array -> our leaf
  to_ref: Callable  # our leaf -> reference array
  gate: bool  # part of a gate


def _identity(a):
  return a


def _conv_entry(prefix, path, kernel_shape, gate):
  h, w, i, o = kernel_shape
  return _Entry(
      f'{prefix}.weight',
      'params',
      path + ('kernel',),
      (o, i, h, w),
      lambda a: a.transpose(2, 3, 1, 0),
      lambda a: a.transpose(3, 2, 0, 1),
      gate,
  )


def _dense_entries(prefix, path, kernel_shape, as_conv, gate):
  i, o = kernel_shape
  if as_conv:  # the gate's fc1/fc2 are 1x1 convs in the reference
    weight = _Entry(
        f'{prefix}.weight',
        'params',
        path + ('kernel',),
        (o, i, 1, 1),
        lambda a: a[:, :, 0, 0].T,
        lambda a: a.T[:, :, None, None],
        gate,
    )
  else:
    weight = _Entry(
        f'{prefix}.weight',
        'params',
        path + ('kernel',),
        (o, i),
        lambda a: a.T,
        lambda a: a.T,
        gate,
    )
  bias = _Entry(
      f'{prefix}.bias',
      'params',
      path + ('bias',),
      (o,),
      _identity,
      _identity,
      gate,
  )
  return [weight, bias]


def _ref_prefix(path: tuple[str, ...]) -> str:
  parts = []
  for name in path:
    match = re.fullmatch(r'stage(\d+)_block(\d+)', name)
    if match:
      parts += [f'layer{match[1]}', match[2]]
    elif _MODULE_NAMES.get(name, name) is not None:
      parts.append(_MODULE_NAMES.get(name, name))
  return '.'.join(parts)


def _modules(tree, path=()):
  """(path, leaves) of every module of a params tree whose values are leaves."""
  leaves = {k: v for k, v in tree.items() if not isinstance(v, Mapping)}
  if leaves:
    yield path, leaves
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _modules(v, path + (k,))


def key_table(variables) -> list[_Entry]:
  """The reference-layout tensors of a model's {'params', 'batch_stats'}, in tree order."""
  table = []
  for path, leaves in _modules(variables['params']):
    prefix, gate = _ref_prefix(path), 'gate' in path
    if set(leaves) == {'scale', 'bias'}:
      n = np.shape(leaves['scale'])
      table += [
          _Entry(
              f'{prefix}.{ref}',
              coll,
              path + (ours,),
              n,
              _identity,
              _identity,
              gate,
          )
          for coll, ours, ref in _BN_LEAVES
      ]
    elif set(leaves) == {'kernel'} and len(np.shape(leaves['kernel'])) == 4:
      table.append(_conv_entry(prefix, path, np.shape(leaves['kernel']), gate))
    elif (
        set(leaves) == {'kernel', 'bias'}
        and len(np.shape(leaves['kernel'])) == 2
    ):
      table += _dense_entries(
          prefix, path, np.shape(leaves['kernel']), gate, gate
      )
    else:
      raise ValueError(
          f'module {"/".join(path)} has leaves {sorted(leaves)} that have no '
          'PyTorch counterpart'
      )
  return table


def _bn_prefixes(table) -> set[str]:
  return {
      e.key.rsplit('.', 1)[0] for e in table if e.key.endswith('.running_mean')
  }


def _torchvision_key(key: str) -> str:
  """Reference-layout key -> torchvision's name of the same tensor."""
  if key.startswith('linear.'):
    return 'fc.' + key[len('linear.') :]
  return key.replace('.shortcut.', '.downsample.')


def _listing(label: str, keys: list[str]) -> str:
  shown = ', '.join(repr(k) for k in keys[:3])
  return f'{label} {shown}' + (
      f' (+{len(keys) - 3} more)' if len(keys) > 3 else ''
  )


def state_dict_problems(
    state_dict: Mapping[str, Any],
    wanted: Mapping[str, tuple[int, ...]],
    optional: set[str] = frozenset(),
) -> list[str]:
  """What keeps `state_dict` from filling a model, in short phrases.

  Args:
    state_dict: key -> array.
    wanted: key -> shape of every tensor the model needs.
    optional: keys that may be present or not (also in `wanted` or not).

  Returns:
    Phrases naming the missing and unexpected keys and the wrong shapes (the
    first three of each); [] if it fits.
  """
  missing = [k for k in wanted if k not in state_dict and k not in optional]
  unexpected = [k for k in state_dict if k not in wanted and k not in optional]
  shapes = [
      f'{k!r} has shape {tuple(np.shape(state_dict[k]))} in the file, the model needs '
      f'{tuple(wanted[k])}'
      for k in wanted
      if k in state_dict and tuple(np.shape(state_dict[k])) != tuple(wanted[k])
  ]
  return (
      ([_listing('missing', missing)] if missing else [])
      + ([_listing('unexpected', unexpected)] if unexpected else [])
      + shapes[:3]
  )


def import_state_dict(
    state_dict: Mapping[str, Any], variables, torchvision: bool = False
):
  """Our variables with every tensor of `state_dict` written in.

  Args:
    state_dict: key -> array (numpy or anything `np.asarray` takes), with no
      `module.` prefix (`read_file` strips it).
    variables: {'params', 'batch_stats'} of the model, as a template (shapes
      and dtypes); with `torchvision`, its gate leaves are kept as they are.
    torchvision: the keys are torchvision ResNet's (no gates, `fc`,
      `downsample`) instead of the reference ConvNet-AIG layout.

  Returns:
    {'params', 'batch_stats'} of numpy arrays in the template's structure and
    dtypes.

  Raises:
    ConfigError (one line) naming missing, unexpected or wrongly shaped
    tensors; nothing is returned half filled.
  """
  table = key_table(variables)
  if torchvision:
    if not any(e.path[-2] == 'conv3' for e in table):
      raise ConfigError(
          'a torchvision ResNet state_dict fits only the bottleneck ResNets: set '
          "model.name='imagenet_resnet' (depth 50, 101 or 152)"
      )
    table = [
        dataclasses.replace(e, key=_torchvision_key(e.key))
        for e in table
        if not e.gate
    ]
  problems = state_dict_problems(
      state_dict,
      {e.key: e.shape for e in table},
      optional={f'{p}.num_batches_tracked' for p in _bn_prefixes(table)},
  )
  if problems:
    layout = 'torchvision ResNet' if torchvision else 'reference ConvNet-AIG'
    raise ConfigError(
        f'the {layout} state_dict does not fit the model: '
        + '; '.join(problems)
        + '; nothing was loaded'
    )
  out = jax.tree.map(
      lambda leaf: np.array(leaf, dtype=leaf.dtype) if torchvision else None,
      variables,
  )
  for e in table:
    node, template = out[e.collection], variables[e.collection]
    for name in e.path[:-1]:
      node, template = node[name], template[name]
    node[e.path[-1]] = np.asarray(
        e.to_ours(np.asarray(state_dict[e.key])), template[e.path[-1]].dtype
    )
  return out


def export_state_dict(
    variables, num_batches_tracked: int = 0
) -> collections.OrderedDict:
  """Our {'params', 'batch_stats'} as a reference-layout PyTorch state_dict.

  Args:
    variables: the model's parameters and BatchNorm statistics.
    num_batches_tracked: the value of every BatchNorm's `num_batches_tracked`
      (the number of training steps, if known).

  Returns:
    An OrderedDict of float32 torch tensors (int64 for `num_batches_tracked`).
  """
  torch = require_torch()
  host = jax.device_get(variables)
  table = key_table(host)
  state_dict = collections.OrderedDict()
  for e in table:
    leaf = host[e.collection]
    for name in e.path:
      leaf = leaf[name]
    # a writable copy
    value = np.array(e.to_ref(np.asarray(leaf, np.float32)), order='C')
    state_dict[e.key] = torch.from_numpy(value)
    if e.key.endswith('.running_var'):
      prefix = e.key[: -len('running_var')]
      state_dict[prefix + 'num_batches_tracked'] = torch.tensor(
          num_batches_tracked, dtype=torch.long
      )
  return state_dict


def export_checkpoint(
    variables, config: ml_collections.ConfigDict, step: int
) -> dict:
  """What `tools.export_torch` saves: a reference-layout checkpoint dict.

  Args:
    variables: the model's parameters and BatchNorm statistics.
    config: the run's resolved config (stored as JSON values, as config.json).
    step: the checkpoint's step (also every `num_batches_tracked`).

  Returns:
    {'state_dict': `export_state_dict(...)`, 'config': dict, 'step': int}.
  """
  return {
      'state_dict': export_state_dict(variables, num_batches_tracked=step),
      'config': json.loads(config.to_json_best_effort()),
      'step': int(step),
  }


@dataclasses.dataclass(frozen=True)
class TorchFile:
  """What a PyTorch file holds (`read_file`).

  Attributes:
    path: the file.
    state_dict: key -> numpy array, `module.` prefixes removed.
    config: the locked config `tools.export_torch` stored, or None (any other
      file: the authors' checkpoints, torchvision's weights).
    step: the step stored with it, or None.
  """

  path: str
  state_dict: dict[str, np.ndarray]
  config: ml_collections.ConfigDict | None
  step: int | None


def read_file(path: str) -> TorchFile:
  """Reads a PyTorch file (`torch.load(weights_only=True)`, on the CPU).

  Args:
    path: a file written by `torch.save`: a state_dict, or a checkpoint dict
      holding one under 'state_dict' (as the reference's training scripts
      and `export_checkpoint`).

  Raises:
    ConfigError (one line) if torch is missing or the file is unreadable,
    holds no state_dict or a config this version cannot read.
  """
  torch = require_torch()
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ConfigError(f'PyTorch file {path!r} does not exist')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # any unreadable file
    first = (
        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    )
    raise ConfigError(
        f'cannot read {path!r} as a PyTorch file: {first}'
    ) from None
  config = step = None
  if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
    config, step = _stored_config(path, obj.get('config')), obj.get('step')
    obj = obj['state_dict']
  if not isinstance(obj, Mapping) or not obj:
    raise ConfigError(
        f'{path!r} holds no state_dict (a dict of tensors, or a checkpoint with '
        "one under 'state_dict')"
    )
  out = {}
  for key, value in obj.items():
    name = key[len('module.') :] if key.startswith('module.') else key
    if not isinstance(value, torch.Tensor):
      raise ConfigError(
          f'{path!r}: entry {key!r} is a {type(value).__name__}, not a tensor'
      )
    if name in out:
      raise ConfigError(
          f'{path!r}: tensor {name!r} appears twice (with and without "module.")'
      )
    value = value.detach().cpu()
    out[name] = (
        value.float()
        if value.dtype in (torch.bfloat16, torch.float16)
        else value
    ).numpy()
  return TorchFile(path, out, config, step if isinstance(step, int) else None)


def config_for(
    stored: TorchFile, config: ml_collections.ConfigDict | None
) -> ml_collections.ConfigDict:
  """The config that describes the model in `stored`: `config` if given,
  else the one the file holds; ConfigError (one line naming the fields that
  describe the network) if neither."""
  if config is not None:
    return config
  if stored.config is None:
    raise ConfigError(
        f'{stored.path!r} is a PyTorch file without a config (the ones '
        'tools.export_torch writes hold theirs): pass config=, whose '
        'model.name, model.depth, model.width, model.num_classes, '
        'model.gated, data.channels, gates.hidden and gates.fix_target_one '
        "describe the network (the authors' checkpoints need "
        'gates.fix_target_one=False)'
    )
  return stored.config


def _stored_config(path: str, stored) -> ml_collections.ConfigDict | None:
  if stored is None:
    return None
  if not isinstance(stored, Mapping):
    raise ConfigError(
        f"{path!r}: its 'config' is a {type(stored).__name__}, not a dict"
    )
  try:
    return config_lib.from_dict(dict(stored))
  except ConfigError as e:
    raise ConfigError(f'{path!r}: {e}') from None


def restore_variables(source: str | TorchFile, variables):
  """Reads a PyTorch file into a copy of `variables` with the same placement.

  A file with `fc.weight` or `downsample` keys is taken as a torchvision
  ResNet (gates keep the values in `variables`); any other as the reference
  ConvNet-AIG layout.

  Args:
    source: a PyTorch file, or what `read_file` read from one.
    variables: {'params', 'batch_stats'} of the model (jax arrays, possibly
      sharded): the template, and the gates' values for torchvision files.

  Returns:
    {'params', 'batch_stats'} with every leaf a jax array of the template
    leaf's shape, dtype and sharding.
  """
  stored = source if isinstance(source, TorchFile) else read_file(source)
  state_dict = stored.state_dict
  torchvision = 'fc.weight' in state_dict or any(
      '.downsample.' in k for k in state_dict
  )
  try:
    values = import_state_dict(state_dict, variables, torchvision=torchvision)
  except ConfigError as e:
    raise ConfigError(f'{stored.path}: {e}') from None
  return jax.tree.map(_place_like, values, variables)


def _place_like(value: np.ndarray, template) -> jax.Array:
  value = np.asarray(value, template.dtype)
  sharding = getattr(template, 'sharding', None)
  if sharding is None:
    return jax.numpy.asarray(value)
  # Works for any sharding, across processes too: each device takes its slice.
  return jax.make_array_from_callback(
      value.shape, sharding, lambda index: value[index]
  )


def require_torch():
  """The torch module; ConfigError (one line) if it is not installed."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError(
        'PyTorch files need torch: pip install torch==2.13.0'
    ) from None
  return torch
