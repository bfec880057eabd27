"""Loading config files outside absl flags (notebooks, tests, sweeps)."""

import importlib.util
import os

import ml_collections


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports the config file at `path` and returns its `get_config(arg)`.

  Args:
    path: a Python file defining `get_config(arg=None)`; `file.py:arg` is
      accepted too, as on the command line.
    arg: the argument string, if not given after a ':' in `path`.
  """
  if arg is None and ':' in os.path.basename(path):
    path, arg = path.rsplit(':', 1)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file {path!r} does not exist')
  spec = importlib.util.spec_from_file_location(
      'adanet_jax_config_' + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()
