"""The training loop: sharded state and steps, periodic eval, logs and
checkpoints, exact resume.

Data parallelism is `jax.jit` over arrays sharded on a ('data',) mesh of all
devices (pmap's successor): the batch is split over devices, the state is
replicated and donated, and the result equals the one-device computation.

The train step is compiled ahead of time before its first call: trace, lower
and compile (or load from JAX's persistent compilation cache). How long that
took and whether it was a cache load go into the first log record of the
launch in metrics.jsonl (`run/compile_s`, `run/compile_cached`).
"""

import logging
import time

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from adanet_jax.data import input_pipeline
from adanet_jax.model import accounting, factory
from adanet_jax.train import checks, checkpoints, evaluation, metrics, optim, preemption, rundir, steps, workdir_lock
from adanet_jax.errors import ConfigError, NonFiniteLossError, Preempted, reported_write

logger = logging.getLogger(__name__)


def is_time(step: int, every: int, last_step: int) -> bool:
  """Whether a periodic action runs after `step` completed steps (1-based).

  Runs every `every` steps (never if `every` <= 0) and always after the last.
  """
  return step == last_step or (every > 0 and step % every == 0)


class Runner:
  """Everything a run builds once from its config: mesh and shardings, the
  model and its cost table, the optimizer and schedule, the per-block targets,
  and the compiled steps."""

  def __init__(self, config: ml_collections.ConfigDict, dataset, devices=None):
    self.config = config
    devices = devices or jax.devices()
    self.mesh = jax.make_mesh((len(devices),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))
    self.model = factory.create_model(config)
    self.costs = accounting.cost_table(self.model, dataset.image_shape)
    self.steps_per_epoch = dataset.steps_per_epoch
    self.num_steps = optim.epochs_to_steps(config.train.num_epochs, self.steps_per_epoch)
    self.eval_every_steps = optim.epochs_to_steps(config.train.eval_every_epochs,
                                                  self.steps_per_epoch)
    self.tx, _ = optim.create_optimizer(config, self.steps_per_epoch)
    self.fixed_blocks = factory.fixed_blocks(config)
    self.hparams = self.replicate(steps.make_hparams(config, self.steps_per_epoch))
    self._jitted_train_step = jax.jit(
        steps.make_train_step(config), out_shardings=self.replicated, donate_argnums=0,
        in_shardings=(self.replicated, self.data, self.replicated, self.replicated))
    self._compiled_train_step = None
    self.compile_info = None  # {'compile_s', 'compile_cached'} once compiled
    self.eval_steps = {
        mode: jax.jit(lambda s, b, mode=mode: steps.eval_step(
            s, b, gate_mode=mode, num_classes=config.model.num_classes),
                      in_shardings=(self.replicated, self.data), out_shardings=self.replicated)
        for mode in config.gates.eval_modes}
    # Made by a compiled function: device_put cannot place a host value on the
    # devices of other processes.
    self.key = jax.jit(lambda: jax.random.key(config.seed), out_shardings=self.replicated)()

  def compile_train_step(self, state, batch: dict) -> dict:
    """Traces, lowers and compiles (or loads) the train step for these arguments.

    Returns:
      {'compile_s': seconds, 'compile_cached': 1.0 if the executable came from
      JAX's persistent compilation cache else 0.0}.
    """
    logger.info('compiling the train step...')
    start = time.perf_counter()
    with CacheHitCounter() as hits:
      self._compiled_train_step = self._jitted_train_step.lower(
          state, batch, self.key, self.hparams).compile()
    seconds = time.perf_counter() - start
    logger.info('%s the train step in %.1f s', 'loaded' if hits.count else 'compiled', seconds)
    self.compile_info = {'compile_s': seconds, 'compile_cached': float(hits.count > 0)}
    return self.compile_info

  def train_step(self, state, batch: dict, key: jax.Array):
    """One compiled train step (compiled on the first call) with this run's hparams."""
    if self._compiled_train_step is None:
      self.compile_train_step(state, batch)
    return self._compiled_train_step(state, batch, key, self.hparams)

  def init_state(self):
    """The initial train state, replicated over the mesh.

    Initialised op by op, not as one compiled program: XLA:CPU took 51 s to
    compile the ResNet-110's initialisation (its hundreds of random draws),
    op by op it takes 10 s, and 2 s once the persistent compilation cache
    holds the ops. With several processes only process 0 initialises and
    sends the values to the others: the cache keys op-by-op programs by
    device and only process 0 writes it, so the others would compile every
    op at every launch (14 s for the digits model).
    """
    def create():
      return steps.create_train_state(self.config, self.model, self.tx,
                                      jax.random.key(self.config.seed))

    if jax.process_count() == 1:
      state = jax.device_get(create())
    else:
      local = (jax.device_get(create()) if jax.process_index() == 0 else
               jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), jax.eval_shape(create)))
      state = jax.device_get(multihost_utils.broadcast_one_to_all(local))
    return self.replicate(state)

  def replicate(self, tree):
    """Host values (the same on every process) as arrays replicated over the
    mesh, placed per device: device_put cannot place a host value on the
    devices of other processes."""
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), self.replicated,
                                               lambda i: np.asarray(x)[i]), tree)

  def to_global(self, batch: dict) -> dict:
    """A global array sharded over 'data' from this process's share."""
    return {k: jax.make_array_from_process_local_data(self.data, v) for k, v in batch.items()}

  def evaluate(self, state, dataset, workdir: str, step: int) -> dict:
    results = {}
    for mode, eval_step in self.eval_steps.items():
      sums = evaluation.evaluate(eval_step, state, dataset.eval_batches(), self.to_global)
      summary = evaluation.summarize(sums, self.costs, self.fixed_blocks,
                                     self.config.model.gated)
      if jax.process_index() == 0:
        rundir.write_class_block_rates(workdir, step, mode, evaluation.class_block_rates(sums))
      results.update({f'eval/{mode}/{k}': v for k, v in summary.items()})
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, dataset=None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Returns the metrics of the final evaluation.

  Raises:
    errors.Preempted: SIGTERM/SIGINT; a checkpoint of the step it stopped at was saved.
    errors.WorkdirInUseError: another live run holds `workdir`.
    errors.CheckpointWriteError: a checkpoint could not be written.
  """
  checks.check_run_config(config)
  with workdir_lock.acquire(workdir), preemption.StopRequest() as stop:
    return _train(config, workdir, dataset, stop)


def _train(config, workdir, dataset, stop) -> dict:
  dataset = dataset or input_pipeline.create_dataset(config)
  checkpointer = checkpoints.Checkpointer(workdir, config)  # refuses another model's workdir
  runner = Runner(config, dataset)
  state = checkpoints.restore_or_init(checkpointer, runner.init_state(), config.init_from)
  # The compiled step wants exactly the shardings it was compiled for.
  state = jax.device_put(state, runner.replicated)
  logger = None
  try:
    if jax.process_index() == 0:
      with reported_write(f'{workdir}/{rundir.CONFIG_FILE}', 'training did not start'):
        rundir.write_config(workdir, config)
    logger = metrics.MetricLogger(workdir, runner.num_steps, runner.steps_per_epoch,
                                  start_step=int(state.step))
    final = _train_loop(config, workdir, dataset, runner, state, checkpointer, logger, stop)
  finally:  # also on errors: finish pending checkpoint writes
    checkpointer.close()
    if logger is not None:
      logger.close()
  return final


def _train_loop(config, workdir, dataset, runner, state, checkpointer, logger, stop) -> dict:
  first = int(state.step)
  progress = Progress(runner.num_steps, first, config.train.batch_size)
  sums, final, run_info = None, {}, {}
  tc = config.train
  for step in range(first, runner.num_steps):
    state, step_metrics = runner.train_step(state, runner.to_global(dataset.train_batch(step)),
                                            runner.key)
    if step == first:  # compiled (or loaded) by this call: goes with the first log record
      run_info = {f'run/{k}': v for k, v in runner.compile_info.items()}
    sums = metrics.accumulate(sums, step_metrics)
    done = step + 1
    log, ckpt = is_time(done, tc.log_every_steps, runner.num_steps), is_time(
        done, config.checkpoint.every_steps, runner.num_steps)
    evaluate = is_time(done, runner.eval_every_steps, runner.num_steps)
    if log or ckpt or evaluate or done % tc.sync_every_steps == 0:
      _raise_if_nonfinite(sums, checkpointer)
    if log:
      summary = {f'train/{k}': v for k, v in metrics.summarize_train(jax.device_get(sums)).items()}
      logger.write(done, {**summary, **progress.update(done), **run_info})
      sums, run_info = None, {}
    if evaluate:
      final = runner.evaluate(state, dataset, workdir, done)
      logger.write(done, final)
    if ckpt:
      checkpointer.save(done, state)
    if done < runner.num_steps and stop.should_stop(done):
      _save_and_stop(done, state, sums, checkpointer, ckpt, stop.message(done, runner.num_steps))
  if not final:  # resumed after the last step: evaluate what is there
    final = runner.evaluate(state, dataset, workdir, runner.num_steps)
  return final


def _save_and_stop(step: int, state, sums, checkpointer, saved: bool, message: str) -> None:
  """Saves `step` (unless just saved, or the loss went non-finite) and raises Preempted."""
  if sums is not None:
    _raise_if_nonfinite(sums, checkpointer)
  if not saved:
    checkpointer.save(step, state)
  if jax.process_count() > 1:  # no process exits before every part of the save is written
    multihost_utils.sync_global_devices('adanet_jax.train.trainer.preempted')
  raise Preempted(message)


def _raise_if_nonfinite(sums: dict, checkpointer) -> None:
  """Waits for the queued steps and stops at the first non-finite loss."""
  first_bad = float(jax.device_get(sums['first_nonfinite_step']))
  if np.isfinite(first_bad):
    checkpointer.manager.wait_until_finished()
    latest = checkpointer.latest_step()
    kept = ('no checkpoint was written yet' if latest is None else
            f'the last checkpoint (step {latest}) is kept')
    raise NonFiniteLossError(
        f'the loss is not finite at step {int(first_bad)} (0-based optimizer step); training '
        f'stopped, {kept}')


class CacheHitCounter:
  """Counts persistent-compilation-cache hits while it is entered (JAX's
  public monitoring events; `count` stays 0 when the cache is off or missed)."""

  HIT_EVENT = '/jax/compilation_cache/cache_hits'

  def __init__(self):
    self.count = 0

  def _listen(self, event: str, **kwargs) -> None:
    del kwargs
    if event == self.HIT_EVENT:
      self.count += 1

  def __enter__(self):
    jax.monitoring.register_event_listener(self._listen)
    return self

  def __exit__(self, *exc_info):
    jax.monitoring.unregister_event_listener(self._listen)


class Progress:
  """Images/s and ETA between log points."""

  def __init__(self, num_steps: int, start_step: int, batch_size: int):
    self.num_steps, self.batch_size = num_steps, batch_size
    self.last_step, self.last_time = start_step, time.perf_counter()

  def update(self, step: int) -> dict:
    now = time.perf_counter()
    per_step = (now - self.last_time) / max(step - self.last_step, 1)
    self.last_step, self.last_time = step, now
    return {'train/images_per_s': self.batch_size / per_step,
            'train/progress': step / self.num_steps,
            'train/eta_s': per_step * (self.num_steps - step)}
