"""Training entry point.

  python -m adanet_jax.main --config=configs/<file>.py[:args] --workdir=DIR \
      [--config.a.b=value ...]

Configs are locked: an override of a field that does not exist, or of the
wrong type, is an error.
"""

from absl import flags, logging
import jax
from ml_collections import config_flags

from adanet_jax import config_base, jax_setup, trainer

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, with optional :arg.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise config_base.ConfigError(f'unexpected arguments: {argv[1:]}')
  jax_setup.enable_compilation_cache()
  jax_setup.quiet_library_logs()
  logging.info('JAX %s on %d %s device(s), %d process(es)', jax.__version__, jax.device_count(),
               jax.default_backend(), jax.process_count())
  final = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  for key in sorted(k for k in final if not isinstance(final[k], list)):
    print(f'{key}: {final[key]:.6g}')


if __name__ == '__main__':
  config_base.run_cli(main)
