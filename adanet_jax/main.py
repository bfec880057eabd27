r"""Training entry point.

  python -m adanet_jax.main --config=configs/<file>.py[:args] --workdir=DIR \
      [--config.a.b=value ...] \
      [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Multi-process (multi-host) runs: see `adanet_jax/distributed.py` for where the
settings come from (flags, environment, cluster auto-detection) and
`adanet_jax/launch.py` for N processes on one machine.

Configs are locked: an override of a field that does not exist, or of the
wrong type, is an error.
"""

from absl import flags, logging
import jax
from ml_collections import config_flags

from adanet_jax import config_base, distributed, jax_setup, trainer

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, with optional :arg.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for a multi-process run '
    '(default $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes in the job (default $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process, 0..num_processes-1 (default $JAX_PROCESS_ID).')


def main(argv):
  if len(argv) > 1:
    raise config_base.ConfigError(f'unexpected arguments: {argv[1:]}')
  # Before anything touches a JAX backend: JAX refuses to join a job later.
  started = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  jax_setup.enable_compilation_cache()
  jax_setup.quiet_library_logs()
  distributed.log_only_on_chief()
  logging.info('JAX %s on %d %s device(s), %d process(es) (%s)', jax.__version__,
               jax.device_count(), jax.default_backend(), jax.process_count(), started)
  final = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() != 0:  # the final metrics are the same on every process
    return
  for key in sorted(k for k in final if not isinstance(final[k], list)):
    print(f'{key}: {final[key]:.6g}')


if __name__ == '__main__':
  config_base.run_cli(main)
