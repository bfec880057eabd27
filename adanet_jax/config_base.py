"""The fields every config shares, and the parser of `get_config` argument
strings such as `depth=110,target=0.7`.
"""

import itertools
import re
import sys
from typing import Any

from absl import app, flags
import ml_collections


class ConfigError(ValueError):
  """A bad config value or argument; the message names the field and what is allowed."""


def run_cli(main) -> None:
  """`absl.app.run(main)`, printing a bad config or override as one line
  instead of a traceback."""
  def guarded(argv):
    try:
      return main(argv)
    except ConfigError as e:
      sys.exit(f'error: {e}')
  app.run(guarded, flags_parser=_parse_flags)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'FATAL Flags parsing error: {e}')
  except (AttributeError, KeyError) as e:
    # config_flags reports an override of a field that does not exist so.
    match = re.search(r"([A-Za-z0-9_]+)\\?'", str(e))
    key = match.group(1) if match else ''
    field = next((a.split('=')[0] for a in argv
                  if a.startswith('--config.') and a.split('=')[0].endswith(f'.{key}')),
                 f'--config override of {key!r}')
    sys.exit(f'error: {field} names no field of the config; configs are locked: override '
             'only fields the config file defines')


def parse_arg(arg: str | None, positional: str | None = None, **defaults: Any) -> ml_collections.ConfigDict:
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
        raise ConfigError(f'config argument {token!r} needs the form key=value; keys: '
                         f'{", ".join(defaults)}')
      key, raw = positional, token
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f'config argument {key!r} is unknown; allowed: {", ".join(defaults)}')
    values[key] = _cast(key, raw.strip(), defaults[key])
  parsed = ml_collections.ConfigDict(values)
  parsed.lock()
  return parsed


def _cast(key: str, raw: str, default: Any) -> Any:
  if isinstance(default, bool):
    if raw.lower() in ('true', '1', 'yes'):
      return True
    if raw.lower() in ('false', '0', 'no'):
      return False
    raise ConfigError(f'config argument {key}={raw!r} must be true or false')
  try:
    return type(default)(raw)
  except ValueError:
    raise ConfigError(f'config argument {key}={raw!r} must be of type '
                     f'{type(default).__name__}') from None


def grid(**axes) -> list[dict]:
  """Sweep points: every combination of the values of each axis.

  Args:
    **axes: config path -> values, e.g. `**{'loss.target': [0.3, 0.5], 'seed': [0, 1]}`.

  Returns:
    A list of override dicts, one per point.
  """
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all configs; each config file changes what it needs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      name='cifar_resnet',  # cifar_resnet | wide_resnet | imagenet_resnet
      depth=110,            # 6n+2 | 6n+4 | 50, 101, 152
      width=1,              # widening factor (channels x width)
      num_classes=10,
      gated=True,           # False: the plain ResNet with the same backbone
      dtype='float32',      # compute dtype: float32 | bfloat16
      bn_gamma_init='ones',  # ones | reference: U(0, 1) where the reference model has it
  ))
  c.gates = ml_collections.ConfigDict(dict(
      hidden=16,
      temperature=1.0,
      train_mode='sample',              # sample | deterministic | expected
      eval_modes=('deterministic',),    # each evaluation runs in all of these
      fix_target_one=True,              # blocks with target 1 always execute
  ))
  c.loss = ml_collections.ConfigDict(dict(
      target=0.7,                  # t: target execution rate
      target_schedule='uniform',   # uniform | resnet50_reference | resnet101_reference
      targets=(),                  # explicit per-block targets; overrides the schedule
      weight=2.0,                  # lambda of the target-rate loss
      reduction='mean',            # mean over blocks (reference code) | sum (paper)
  ))
  c.data = ml_collections.ConfigDict(dict(
      name='cifar10',
      image_size=32,
      channels=3,
  ))
  c.optim = ml_collections.ConfigDict(dict(
      base_learning_rate=0.1,   # at base_batch_size; scaled linearly with train.batch_size
      base_batch_size=256,
      momentum=0.9,
      nesterov=False,
      weight_decay=5e-4,        # coupled L2 on every parameter, as the reference
      schedule='step',          # step | cosine | constant
      decay_epochs=(150.0, 250.0),
      decay_factor=0.1,
      warmup_epochs=0.0,
  ))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=256,           # global batch, over all devices and processes
      num_epochs=350.0,
      log_every_steps=100,
      eval_every_epochs=10.0,   # and always after the last step
      sync_every_steps=10,      # wait for results at least this often (CPU: <= 10)
  ))
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=500,           # global; the last batch is padded and masked
  ))
  c.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=1000,         # and always after the last step
      keep=3,
  ))
  c.init_from = ''              # workdir, checkpoint dir or PyTorch .pth/.pt (params only)
  return c
