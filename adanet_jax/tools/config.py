"""Prints a resolved config: every field, its value and what it means.

  python -m adanet_jax.tools.config --config=configs/digits.py[:args] [--config.a.b=v ...]

One line per field, `path = value  # description`, sorted by path; the
descriptions are `config_lib.DESCRIPTIONS`. The config is loaded and checked
as `adanet_jax.main` loads and checks it, so a bad file, argument, override
or value is the same one `error:` line; no JAX backend is started.
"""

from absl import flags

from adanet_jax import config_lib
from adanet_jax.runtime import cli
from adanet_jax.train import checks


def define_flags() -> dict:
  return dict(
      config=flags.DEFINE_string(
          'config', None, 'Config file, with optional :arg.'
      ),
  )


def main(args) -> None:
  cli.require(args, 'config')
  config = checks.validate(config_lib.load_config(args.config, args.overrides))
  print('\n'.join(config_lib.describe(config)))


if __name__ == '__main__':
  cli.run(main, define_flags)
