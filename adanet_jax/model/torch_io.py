"""PyTorch weights in and out: torchvision ResNets and reference-layout ConvNet-AIG.

Import (`restore_variables`, used by `config.init_from` and
`adanet_jax.load(path, config=...)` for a `.pth`/`.pt` file):

- a torchvision ResNet-50/101/152 `state_dict` into the gated ImageNet model,
  as the reference's `train_img.py --pretrained`: `fc` becomes the head,
  `downsample` the projection shortcut, and the gates keep their fresh init;
- a `state_dict` in the reference ConvNet-AIG layout (see
  `experiments/torch_twin.py`), for the CIFAR, ImageNet and wide families,
  or a training checkpoint holding one under `state_dict`.

Keys may carry DataParallel's `module.` prefix; `num_batches_tracked` is
accepted and not used (PyTorch 0.3.1, which the reference pins, had none).
Every other tensor must be used exactly once and every leaf of the model
written once: a missing, unexpected or wrongly shaped tensor raises a
ConfigError of one line naming it, and nothing is loaded.

Export (`export_state_dict`): parameters and BatchNorm statistics as a
reference-layout `state_dict` that the twin, or the reference model, loads
with `load_state_dict(strict=True)`.

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
import os
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np

from adanet_jax.errors import ConfigError

TORCH_SUFFIXES = ('.pth', '.pt')
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
  """Whether `path` names a PyTorch file (by its suffix)."""
  return str(path).endswith(TORCH_SUFFIXES)


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


def import_state_dict(
    state_dict: Mapping[str, Any], variables, torchvision: bool = False
):
  """Our variables with every tensor of `state_dict` written in.

  Args:
    state_dict: key -> array (numpy or anything `np.asarray` takes), with no
      `module.` prefix (`read_state_dict` strips it).
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
  wanted = {e.key: e for e in table}
  optional = {f'{p}.num_batches_tracked' for p in _bn_prefixes(table)}
  missing = [k for k in wanted if k not in state_dict]
  unexpected = [k for k in state_dict if k not in wanted and k not in optional]
  shapes = [
      f'{k!r} has shape {tuple(np.shape(state_dict[k]))} in the file, the model needs '
      f'{wanted[k].shape}'
      for k in wanted
      if k in state_dict and tuple(np.shape(state_dict[k])) != wanted[k].shape
  ]
  problems = (
      ([_listing('missing', missing)] if missing else [])
      + ([_listing('unexpected', unexpected)] if unexpected else [])
      + shapes[:3]
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


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The state_dict in a PyTorch file, as numpy, `module.` prefixes removed.

  Args:
    path: a file written by `torch.save`: a state_dict, or a checkpoint dict
      holding one under 'state_dict' (as the reference's training scripts).

  Raises:
    ConfigError (one line) if torch is missing or the file is unreadable or
    holds no state_dict.
  """
  torch = require_torch()
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
  if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
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
  return out


def restore_variables(path: str, variables):
  """Reads a PyTorch file into a copy of `variables` with the same placement.

  A file with `fc.weight` or `downsample` keys is taken as a torchvision
  ResNet (gates keep the values in `variables`); any other as the reference
  ConvNet-AIG layout.

  Args:
    path: a `.pth`/`.pt` file.
    variables: {'params', 'batch_stats'} of the model (jax arrays, possibly
      sharded): the template, and the gates' values for torchvision files.

  Returns:
    {'params', 'batch_stats'} with every leaf a jax array of the template
    leaf's shape, dtype and sharding.
  """
  state_dict = read_state_dict(path)
  torchvision = 'fc.weight' in state_dict or any(
      '.downsample.' in k for k in state_dict
  )
  try:
    values = import_state_dict(state_dict, variables, torchvision=torchvision)
  except ConfigError as e:
    raise ConfigError(f'{path}: {e}') from None
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
