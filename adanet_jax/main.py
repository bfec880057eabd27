r"""Training entry point.

  python -m adanet_jax.main --config=configs/<file>.py[:args] --workdir=DIR \
      [--config.a.b=value ...] \
      [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

The config (file, argument string, overrides) is loaded before JAX starts a
backend, and its values are checked before anything is written. Multi-process (multi-host) runs: see
`adanet_jax/runtime/distributed.py` for where the settings come from (flags,
environment, cluster auto-detection) and `adanet_jax/tools/launch.py` for N
processes on one machine.
"""

import logging

from absl import flags

from adanet_jax import config_lib
from adanet_jax.runtime import cli
from adanet_jax.train import preemption

# Named, not __name__: run as `python -m adanet_jax.main` that is '__main__'.
logger = logging.getLogger('adanet_jax.main')


def define_flags() -> dict:
  return dict(
      config=flags.DEFINE_string(
          'config', None, 'Config file, with optional :arg.'
      ),
      workdir=flags.DEFINE_string(
          'workdir', None, 'Directory for checkpoints and metrics.'
      ),
      coordinator_address=flags.DEFINE_string(
          'coordinator_address',
          None,
          'host:port of process 0, for a multi-process run '
          '(default $JAX_COORDINATOR_ADDRESS).',
      ),
      num_processes=flags.DEFINE_integer(
          'num_processes',
          None,
          'Processes in the job (default $JAX_NUM_PROCESSES).',
      ),
      allow_config_change=flags.DEFINE_bool(
          'allow_config_change',
          False,
          'Resume a workdir even if the config changes what its steps mean '
          '(data order, schedule, loss); the changes are recorded in '
          '<workdir>/config_history.jsonl.',
      ),
      process_id=flags.DEFINE_integer(
          'process_id',
          None,
          'This process, 0..num_processes-1 (default $JAX_PROCESS_ID).',
      ),
  )


def main(args) -> None:
  # Imported here, inside `cli.run`, with the stop signals held back: one
  # during these imports (about a second) then ends the run with one line.
  # pylint: disable=import-outside-toplevel
  with preemption.stop_signals_deferred():
    import jax

    from adanet_jax.runtime import distributed, jax_setup
    from adanet_jax.train import trainer
  # pylint: enable=import-outside-toplevel
  cli.require(args, 'config', 'workdir')
  # Values are checked by the trainer, before it creates anything.
  config = config_lib.load_config(args.config, args.overrides)
  # Before anything touches a JAX backend: JAX refuses to join a job later.
  started = distributed.initialize(
      args.coordinator_address, args.num_processes, args.process_id
  )
  jax_setup.enable_compilation_cache()
  jax_setup.quiet_library_logs()
  distributed.log_only_on_chief()
  logger.info(
      'JAX %s on %d %s device(s), %d process(es) (%s)',
      jax.__version__,
      jax.device_count(),
      jax.default_backend(),
      jax.process_count(),
      started,
  )
  # It prints the final evaluation and where the outputs are.
  with distributed.peer_failures_reported():
    trainer.train_and_evaluate(
        config,
        args.workdir,
        allow_config_change=args.allow_config_change,
        # a sweep point's overrides, and any other change, in its hparams
        hparam_fields=trainer.changed_fields(
            config, args.config, args.overrides
        ),
    )


if __name__ == '__main__':
  cli.run(
      main,
      define_flags,
      stopped=' before training started (nothing to save); run the same '
      'command again',
  )
