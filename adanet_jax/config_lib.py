"""Configs: the fields every config shares, config files with their argument
strings, command-line overrides, and the configs stored by
older versions. The checks of the values live in `train/checks.py`.

A config file defines `get_config(arg=None)`; `arg` is a small typed string
(`configs/cifar10.py:depth=56,target=0.5`, parsed by `parse_arg`). Overrides
(`--config.a.b=value` on a command line, `{'a.b': value}` in code) are
applied by `apply_overrides` alone, for every entry point, so they are
checked the same way everywhere: the field must exist (configs are locked;
a mistyped name is answered with the closest ones) and the value must have
its type. `DESCRIPTIONS` says what each field means.
"""

import ast
import difflib
import importlib.util
import os
from typing import Any

import ml_collections

from adanet_jax.errors import ConfigError

OVERRIDE_PREFIX = '--config.'
# The default of `train.stop_signals`: see adanet_jax/train/preemption.py.
DEFAULT_STOP_SIGNALS = ('SIGTERM', 'SIGINT', 'SIGUSR1', 'SIGUSR2', 'SIGHUP')


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all configs; each config file changes what it needs.

  What each field means is in `DESCRIPTIONS` (`python -m
  adanet_jax.tools.config` prints both).
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(
      dict(
          name='cifar_resnet',
          depth=110,
          width=1,
          num_classes=10,
          gated=True,
          dtype='float32',
          bn_gamma_init='ones',
          scan_blocks='auto',
      )
  )
  c.gates = ml_collections.ConfigDict(
      dict(
          hidden=16,
          temperature=1.0,
          train_mode='sample',
          eval_modes=('deterministic',),
          fix_target_one=True,
      )
  )
  c.loss = ml_collections.ConfigDict(
      dict(
          target=0.7,
          target_schedule='uniform',
          targets=(),
          weight=2.0,
          reduction='mean',
      )
  )
  c.data = ml_collections.ConfigDict(
      dict(
          name='cifar10',
          image_size=32,
          channels=3,
          data_dir='',
          eval_fraction=0.2,
      )
  )
  c.optim = ml_collections.ConfigDict(
      dict(
          base_learning_rate=0.1,
          base_batch_size=256,
          momentum=0.9,
          nesterov=False,
          weight_decay=5e-4,
          schedule='step',
          decay_fractions=(3 / 7, 5 / 7),
          decay_factor=0.1,
          warmup_epochs=0.0,
      )
  )
  c.train = ml_collections.ConfigDict(
      dict(
          batch_size=256,
          num_epochs=350.0,
          log_every_steps=100,
          eval_every_epochs=10.0,
          sync_every_steps=10,
          stop_signals=DEFAULT_STOP_SIGNALS,
          profile_steps=0,
      )
  )
  c.eval = ml_collections.ConfigDict(
      dict(
          batch_size=500,
      )
  )
  c.checkpoint = ml_collections.ConfigDict(
      dict(
          every_steps=1000,
          keep=3,
      )
  )
  c.init_from = ''
  return c


# One line per field of every config, next to the defaults: the one place a
# field is explained (`python -m adanet_jax.tools.config` prints them; a test
# fails for a field of a configs/*.py file that has none).
DESCRIPTIONS = {
    'seed': 'the one seed: initialisation, data order and Gumbel noise',
    'model.name': 'architecture: cifar_resnet | wide_resnet | imagenet_resnet',
    'model.depth': 'layers: 6n+2 (cifar_resnet) | 6n+4 (wide_resnet) | '
    '50, 101, 152 (imagenet_resnet)',
    'model.width': 'widening factor (channels x width)',
    'model.num_classes': 'classes of the head',
    'model.gated': 'a gate on every block; false: the plain ResNet with the '
    'same backbone',
    'model.dtype': 'compute dtype: float32 | bfloat16 (parameters, loss and '
    'BatchNorm statistics stay float32)',
    'model.bn_gamma_init': 'BatchNorm gammas: ones | reference (U(0, 1) '
    'where the reference model has it)',
    'model.scan_blocks': 'auto | on | off: identical blocks in one loop '
    '(compile time); auto: on for float32 on XLA:CPU',
    'gates.hidden': "width of the gate's hidden layer",
    'gates.temperature': 'Gumbel-softmax temperature (gradient path only)',
    'gates.train_mode': 'gate mode in training: sample | deterministic | '
    'expected',
    'gates.eval_modes': 'each evaluation runs in all of these gate modes',
    'gates.fix_target_one': 'blocks with target 1 always execute',
    'loss.target': 't: target execution rate',
    'loss.target_schedule': 'per-block targets: uniform | resnet50_reference '
    '| resnet101_reference',
    'loss.targets': 'explicit per-block targets; overrides the schedule',
    'loss.weight': 'lambda of the target-rate loss',
    'loss.reduction': 'target-rate loss over blocks: mean (reference code) | '
    'sum (paper)',
    'data.name': 'dataset: digits | cifar10 | cifar100 | imagenet2012 | '
    'folder',
    'data.image_size': 'height and width of the input images',
    'data.channels': 'channels of the input images',
    'data.data_dir': "tfds data_dir ('' = $TFDS_DATA_DIR or "
    "~/tensorflow_datasets); for 'folder', the folder of class subfolders",
    'data.eval_fraction': "'folder' without train/ and test/: the share of "
    'images held out for evaluation',
    'optim.base_learning_rate': 'learning rate at optim.base_batch_size; '
    'scaled linearly with train.batch_size',
    'optim.base_batch_size': 'the batch size of optim.base_learning_rate',
    'optim.momentum': 'SGD momentum',
    'optim.nesterov': 'Nesterov momentum',
    'optim.weight_decay': 'coupled L2 on every parameter, as the reference',
    'optim.schedule': 'learning-rate schedule after warmup: step | cosine | '
    'constant',
    'optim.decay_fractions': "'step': x optim.decay_factor at these "
    'fractions of train.num_epochs (the drops follow an override of the '
    'epochs)',
    'optim.decay_factor': "'step': the factor of each drop",
    'optim.warmup_epochs': 'linear warmup from 0 to the learning rate, in '
    'epochs',
    'train.batch_size': 'global batch, over all devices and processes',
    'train.num_epochs': 'length of the training, in epochs',
    'train.log_every_steps': 'log the metrics every this many steps (0: '
    'only after the last step)',
    'train.eval_every_epochs': 'evaluate every this many epochs, and always '
    'after the last step',
    'train.sync_every_steps': 'wait for results at least this often (CPU: '
    '<= 10)',
    'train.stop_signals': 'signals that stop a run at the next step boundary '
    'with a checkpoint (exit 75)',
    'train.profile_steps': 'trace this many steps with jax.profiler into '
    "workdir/profile, from the launch's second step (0: off)",
    'eval.batch_size': 'global evaluation batch; the last batch is padded '
    'and masked',
    'checkpoint.every_steps': 'save every this many steps (0: only after the '
    'last step), and always after the last step',
    'checkpoint.keep': 'checkpoints kept to resume from, the newest',
    'init_from': 'weights to start from when the workdir holds no checkpoint: '
    "a workdir, checkpoint directory or PyTorch .pth/.pt; '' = none",
}


def field_paths(config: ml_collections.ConfigDict, prefix: str = '') -> list:
  """The dotted path of every field (not group) of `config`, in its order."""
  paths = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      paths += field_paths(value, f'{prefix}{key}.')
    else:
      paths.append(prefix + key)
  return paths


def describe(config: ml_collections.ConfigDict) -> list[str]:
  """`path = value  # description`, one line per field of `config`.

  A field `DESCRIPTIONS` lacks says so in its line, rather than failing: the
  tests make sure every field of the bundled configs has one.
  """
  return [
      f'{path} = {_get(config, path)!r}  # '
      f'{DESCRIPTIONS.get(path, "(no description)")}'
      for path in field_paths(config)
  ]


def _get(config: ml_collections.ConfigDict, path: str):
  for key in path.split('.'):
    config = config[key]
  return config


def parse_arg(
    arg: str | None, positional: str | None = None, **defaults: Any
) -> ml_collections.ConfigDict:
  """Parses `key=value,key=value` against typed defaults.

  Args:
    arg: the string after the ':' of `--config=file.py:arg`, or None.
    positional: name of the key that a bare token (no '=') sets, if any, e.g.
      `imagenet.py:resnet101` sets `arch`.
    **defaults: every allowed key with its default; the default's type is the
      type of the value (bool accepts true/false/1/0).

  Returns:
    A locked ConfigDict of the parsed values.
  """
  values = dict(defaults)
  for token in filter(None, (arg or '').split(',')):
    key, sep, raw = token.partition('=')
    if not sep:
      if positional is None:
        raise ConfigError(
            f'config argument {token!r} needs the form key=value; keys: '
            f'{", ".join(defaults)}'
        )
      key, raw = positional, token
    key = key.strip()
    if key not in defaults:
      raise ConfigError(
          f'config argument {key!r} is unknown; allowed: {", ".join(defaults)}'
      )
    values[key] = _cast_arg(key, raw.strip(), defaults[key])
  parsed = ml_collections.ConfigDict(values)
  parsed.lock()
  return parsed


def _cast_arg(key: str, raw: str, default: Any) -> Any:
  if isinstance(default, bool):
    if raw.lower() in ('true', '1', 'yes'):
      return True
    if raw.lower() in ('false', '0', 'no'):
      return False
    raise ConfigError(f'config argument {key}={raw!r} must be true or false')
  try:
    return type(default)(raw)
  except ValueError:
    raise ConfigError(
        f'config argument {key}={raw!r} must be of type '
        f'{type(default).__name__}'
    ) from None


def load_module(path: str):
  """Imports a config file as a module (for `get_config`, `get_sweeps`)."""
  if os.path.isdir(path) or not os.path.exists(path):
    raise ConfigError(f'config file {path!r} does not exist')
  spec = importlib.util.spec_from_file_location(
      'adanet_jax_config_' + os.path.splitext(os.path.basename(path))[0], path
  )
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(
        f'config file {path!r} has a syntax error at line {e.lineno}: '
        f'{e.msg}'
    ) from None
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path!r} defines no get_config(arg=None)')
  return module


def split_path_arg(config_arg: str) -> tuple[str, str | None]:
  """`configs/x.py:depth=8` -> ('configs/x.py', 'depth=8'); no ':' -> (path, None).

  The argument starts after the first `.py:`, so it may hold paths with
  '/' and ':' (`configs/folder.py:dir=/data/photos`).
  """
  path, sep, arg = config_arg.partition('.py:')
  if sep:
    return path + '.py', arg
  return config_arg, None


def load_config(
    config_arg: str, overrides: dict | None = None
) -> ml_collections.ConfigDict:
  """The config a command line describes: file, argument string, overrides.

  Args:
    config_arg: `path.py` or `path.py:arg`, as `--config=` takes it.
    overrides: `{'a.b': value}`; string values are parsed as the command line
      parses them.

  Returns:
    The locked config.
  """
  path, arg = split_path_arg(config_arg)
  module = load_module(path)
  config = module.get_config(arg) if arg is not None else module.get_config()
  apply_overrides(config, overrides or {})
  return config


def split_overrides(argv: list[str]) -> tuple[list[str], dict]:
  """Separates `--config.a.b=v` arguments from the other flags.

  Returns:
    (the other arguments, {'a.b': 'v'} in command-line order).
  """
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith(OVERRIDE_PREFIX):
      key, sep, value = arg[len(OVERRIDE_PREFIX) :].partition('=')
      if not sep or not key:
        raise ConfigError(f'{arg!r} needs the form --config.<field>=<value>')
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """Sets `{'a.b': value}` overrides in place.

  String values are parsed as the command line parses them: Python literals
  for numbers, tuples and quoted strings; `true`/`false` for booleans; a
  bare word for a string field. Raises ConfigError naming a field that does
  not exist or a value of the wrong type.
  """
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    holder = config
    try:
      for parent in parents:
        holder = holder[parent]
      current = holder[leaf]
    except (KeyError, AttributeError, TypeError):
      raise ConfigError(
          f'--config.{key} names no field of the config; '
          f'{_closest_fields(config, key)}'
      ) from None
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(
          f'--config.{key} names a group of fields; override one of: '
          f'{", ".join(sorted(current.keys()))}'
      )
    if isinstance(value, str):
      value = _parse_value(key, value, current)
    try:
      holder[leaf] = value
    except TypeError:
      raise ConfigError(
          f'--config.{key}={value!r} has the wrong type: the field holds a '
          f'{type(current).__name__}'
      ) from None


# difflib's ratio of a suggestion (get_close_matches' default cutoff); the
# same group's fields win a tie; suggestions within this of the best.
_CLOSE = 0.6
_SAME_GROUP_BONUS = 0.1
_AS_CLOSE = 0.05


def _closest_fields(config: ml_collections.ConfigDict, key: str) -> str:
  """What a mistyped override `key` most likely meant, as the end of its error.

  Under a group that exists, fields are compared by name, those of the same
  group first (`train.batch_sise` is not `eval.batch_size`), fields of other
  groups next (`optim.num_epochs`); a misspelt group, or a path through a
  field, is compared as a whole dotted name (`trian.num_epochs`). The best
  matches are named, those nearly as close as the best with them.
  """
  *parents, leaf = key.split('.')
  group = config
  for parent in parents:
    group = group.get(parent) if _is_group(group) else None
  group_name = '.'.join(parents)
  scores = {}
  for path in field_paths(config):
    if _is_group(group):
      group_of, _, name = path.rpartition('.')
      ratio = difflib.SequenceMatcher(None, leaf, name).ratio()
      bonus = _SAME_GROUP_BONUS if group_of == group_name else 0.0
    else:
      ratio, bonus = difflib.SequenceMatcher(None, key, path).ratio(), 0.0
    if ratio >= _CLOSE:
      scores[path] = ratio + bonus
  best = max(scores.values(), default=0.0)
  matches = sorted(
      (p for p, score in scores.items() if score >= best - _AS_CLOSE),
      key=lambda p: -scores[p],
  )
  if matches:
    return f'did you mean {" or ".join(matches)}?'
  if parents and _is_group(group):
    fields = sorted(k for k in group if not _is_group(group[k]))
    return f'the fields of {group_name}: {", ".join(fields)}'
  return 'configs are locked: override only fields the config file defines'


def _is_group(value) -> bool:
  return isinstance(value, ml_collections.ConfigDict)


def _parse_value(key: str, raw: str, current):
  if isinstance(current, bool):
    if raw.lower() in ('true', 'false', '1', '0'):
      return raw.lower() in ('true', '1')
    raise ConfigError(f'--config.{key}={raw}: must be true or false')
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    if isinstance(current, str):
      return raw
    if isinstance(current, tuple):  # a,b,c: bare words in a tuple of strings
      if not current:  # no element to take the type from: literals only
        raise ConfigError(
            f'--config.{key}={raw}: not a valid tuple (its elements must be '
            'numbers or quoted strings)'
        ) from None
      inner = raw.strip()
      if inner[:1] + inner[-1:] in ('()', '[]'):
        inner = inner[1:-1]
      return tuple(
          _parse_value(key, part.strip(), current[0])
          for part in inner.split(',')
          if part.strip()
      )
    raise ConfigError(
        f'--config.{key}={raw}: not a valid {type(current).__name__}'
    ) from None
  if isinstance(current, str) and not isinstance(value, str):
    return raw
  if (
      isinstance(current, float)
      and isinstance(value, int)
      and not isinstance(value, bool)
  ):
    return float(value)
  if isinstance(current, tuple) and isinstance(value, (list, int, float, str)):
    return tuple(value) if isinstance(value, list) else (value,)
  if type(value) is not type(current) and not isinstance(current, tuple):
    raise ConfigError(
        f'--config.{key}={raw}: not a valid {type(current).__name__}'
    )
  return value


def from_dict(values: dict) -> ml_collections.ConfigDict:
  """A locked config from a stored dict (`config.json`), on top of today's
  defaults, so a run written by an older version (with fewer fields) loads.

  Fields written by older versions and since replaced are converted:
  `optim.decay_epochs` (absolute epochs) becomes `optim.decay_fractions` of
  a 'step' schedule (other schedules never read it: the default stays).
  """
  values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
  optim = values.get('optim', {})
  decay_epochs = optim.pop('decay_epochs', None)
  if decay_epochs is not None and optim.get('schedule') == 'step':
    epochs = values['train']['num_epochs']
    optim['decay_fractions'] = [e / epochs for e in decay_epochs]
  config = get_base_config()
  _merge(config, values, '')
  config.lock()
  return config


def _merge(
    config: ml_collections.ConfigDict, values: dict, prefix: str
) -> None:
  for key, value in values.items():
    if key not in config:
      raise ConfigError(
          f'stored config has a field {prefix}{key} this version does not know'
      )
    if isinstance(value, dict):
      _merge(config[key], value, f'{prefix}{key}.')
    else:
      config[key] = tuple(value) if isinstance(value, list) else value
