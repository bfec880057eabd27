"""Loading config files outside absl flags (notebooks, tests, sweeps)."""

import ast
import importlib.util
import os

import ml_collections

from adanet_jax.config_base import ConfigError


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports the config file at `path` and returns its `get_config(arg)`.

  Args:
    path: a Python file defining `get_config(arg=None)`; `file.py:arg` is
      accepted too, as on the command line.
    arg: the argument string, if not given after a ':' in `path`.
  """
  if arg is None and ':' in os.path.basename(path):
    path, arg = path.rsplit(':', 1)
  module = load_module(path)
  return module.get_config(arg) if arg is not None else module.get_config()


def load_module(path: str):
  """Imports a config file as a module (for `get_config`, `get_sweeps`)."""
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path!r} does not exist')
  spec = importlib.util.spec_from_file_location(
      'adanet_jax_config_' + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """Sets `{'a.b': value}` overrides in place, as `--config.a.b=value` would.

  String values are parsed as the command line parses them (Python literals;
  `true`/`false` for booleans). Raises ConfigError naming a field that does
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
      raise ConfigError(f'override {key}={value!r} names no field of the config') from None
    if isinstance(value, str) and not isinstance(current, str):
      value = _parse_literal(key, value, current)
    try:
      holder[leaf] = value
    except TypeError as e:
      raise ConfigError(f'override {key}={value!r} has the wrong type: {e}') from None


def _parse_literal(key: str, raw: str, current):
  if isinstance(current, bool) and raw.lower() in ('true', 'false'):
    return raw.lower() == 'true'
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    raise ConfigError(f'override {key}={raw!r} is not a valid '
                      f'{type(current).__name__}') from None
