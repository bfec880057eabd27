"""The training loop: periodic logs, evaluation and checkpoints, exact resume.

`setup` builds what a launch needs once: the run plan (`plan.RunPlan`, the
only reader of the config's numbers), the placement on a ('data',) mesh, the
model, the optimizer, the compiled train step and the evaluator. The loop
reads the plan; each periodic action sits behind `is_time`.
"""

import dataclasses
import os
import time
from typing import Any, Sequence

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from adanet_jax import config_lib
from adanet_jax.data import input_pipeline
from adanet_jax.errors import (
    NonFiniteLossError,
    Preempted,
    WorkdirGoneError,
    reported_write,
)
from adanet_jax.model import accounting, factory
from adanet_jax.train import (
    checkpoints,
    checks,
    compilation,
    evaluation,
    initialization,
    metrics,
    optim,
    preemption,
    rundir,
    steps,
    workdir_lock,
)
from adanet_jax.train import placement as placement_lib
from adanet_jax.train import plan as plan_lib


def is_time(step: int, every: int, last_step: int) -> bool:
  """Whether a periodic action runs after `step` completed steps (1-based).

  Runs every `every` steps (never if `every` <= 0) and always after the last.
  """
  return step == last_step or (every > 0 and step % every == 0)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a launch builds once from its config and dataset.

  Attributes:
    plan: the run's numbers and choices.
    placement: the mesh and shardings.
    model: the flax module.
    tx: the optimizer the train state holds.
    train_step: the compiled train step, `(state, batch) -> (state, metrics)`.
    evaluator: `(state, dataset) -> (metrics, per-class matrices)`.
  """

  plan: plan_lib.RunPlan
  placement: placement_lib.Placement
  model: Any
  tx: optax.GradientTransformation
  train_step: compilation.CompiledTrainStep
  evaluator: evaluation.Evaluator

  def init_state(self) -> steps.TrainState:
    """The initial train state, replicated over the mesh."""
    p = self.plan
    return initialization.initial_state(
        self.model, self.tx, p.image_shape, p.seed, self.placement
    )


def setup(config: ml_collections.ConfigDict, dataset, devices=None) -> Setup:
  """Builds the plan, placement, model, optimizer, train step and evaluator.

  Args:
    config: the run's config (checked).
    dataset: the input pipeline (`steps_per_epoch`, `image_shape`).
    devices: the mesh's devices; default all.
  """
  plan = plan_lib.make_plan(config, dataset.steps_per_epoch)
  checks.check_plan(plan, config)
  placement = placement_lib.Placement(devices)
  model = factory.create_model(config)
  tx, schedule = optim.create_optimizer(plan.optimizer)
  train_step = compilation.CompiledTrainStep(
      steps.make_train_step(plan, schedule),
      placement,
      placement.seed_key(plan.seed),
      placement.replicate(steps.make_hparams(plan)),
  )
  evaluator = evaluation.Evaluator(
      plan, placement, accounting.cost_table(model, dataset.image_shape)
  )
  return Setup(
      plan=plan,
      placement=placement,
      model=model,
      tx=tx,
      train_step=train_step,
      evaluator=evaluator,
  )


@dataclasses.dataclass(frozen=True)
class Run:
  """What the training loop works with: the launch's set-up, its data and
  its outputs."""

  setup: Setup
  dataset: Any
  workdir: str
  checkpointer: checkpoints.Checkpointer
  logger: metrics.MetricLogger
  lock: workdir_lock.WorkdirLock

  @property
  def plan(self) -> plan_lib.RunPlan:
    return self.setup.plan

  def evaluate(self, state, step: int) -> dict:
    """Evaluation metrics of `state`; the per-class matrices go to the
    workdir (CSVs) and to TensorBoard (images)."""
    results, matrices = self.setup.evaluator(state, self.dataset)
    if jax.process_index() == 0:
      for mode, matrix in matrices.items():
        path = rundir.class_block_rates_path(self.workdir, mode, step)
        with reported_write(path, rundir.STOPPED_RESUME):
          rundir.write_class_block_rates(self.workdir, step, mode, matrix)
    self.logger.write_class_block_rates(step, matrices)
    return results


def changed_fields(
    config: ml_collections.ConfigDict, config_arg: str, overrides=()
) -> list[str]:
  """The fields of `config` that `overrides` name or whose value differs
  from the config file's own (`config_arg`, `file.py[:arg]`, loaded again
  without overrides), sorted: a sweep point's or a command line's changes,
  for the run's hparams (`train_and_evaluate`'s `hparam_fields`)."""
  file_config = config_lib.load_config(config_arg)
  changes = checkpoints.config_changes(file_config, config)
  return sorted(set(changes) | set(overrides))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    dataset=None,
    allow_config_change: bool = False,
    hparam_fields: Sequence[str] = (),
) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Everything is checked before the workdir is created or changed: the
  config, the dataset, the plan (at least one step), the workdir's model and
  config (`checkpoints.check_workdir`), the `init_from` checkpoint.

  Args:
    config: the run's config.
    workdir: the run's directory (`~` expanded).
    dataset: the input pipeline (default: the one the config names).
    allow_config_change: resume even if the config changes what a step means;
      the changes go to the workdir's config history.
    hparam_fields: config fields the run's hparams in TensorBoard hold
      besides `metrics.MAIN_HPARAMS` (`changed_fields`).

  Returns the metrics of the final evaluation.

  Raises:
    errors.ConfigError: bad input; nothing was created or changed.
    errors.Preempted: a stop signal (`train.stop_signals`); a checkpoint of
      the step it stopped at was saved.
    errors.WorkdirInUseError: another live run holds `workdir`.
    errors.WorkdirGoneError: `workdir` was deleted while training.
    errors.CheckpointWriteError: a checkpoint could not be written.
    errors.WorkdirWriteError: another file of `workdir` could not be written.
  """
  workdir = os.path.expanduser(workdir)
  checks.check_run_config(config)
  workdir_lock.check_creatable(workdir)
  dataset = dataset or input_pipeline.create_dataset(config)
  parts = setup(config, dataset)
  info = metrics.run_info(config, hparam_fields)
  checkpoints.check_workdir(workdir, config, allow_config_change)
  start = checkpoints.start_state(
      workdir, parts.init_state(), parts.plan.init_from
  )
  with (
      workdir_lock.acquire(workdir) as lock,
      preemption.StopRequest(config.train.stop_signals) as stop,
  ):
    # Again under the lock: a run that held it may have changed the workdir.
    changes = checkpoints.check_workdir(workdir, config, allow_config_change)
    return _train(
        config, workdir, parts, dataset, start, changes, stop, lock, info
    )


def _train(
    config, workdir, parts, dataset, start, changes, stop, lock, info
) -> dict:
  checkpointer = checkpoints.Checkpointer(workdir, config)
  state = checkpointer.resume(start)
  # The compiled step wants exactly the shardings it was compiled for.
  state = jax.device_put(state, parts.placement.replicated)
  logger = None
  try:
    if jax.process_index() == 0:
      with reported_write(
          f'{workdir}/{rundir.CONFIG_FILE}', 'training did not start'
      ):
        if changes:
          rundir.append_config_history(workdir, int(state.step), changes)
        rundir.write_config(workdir, config)
    logger = metrics.MetricLogger(
        workdir,
        info,
        parts.plan.num_steps,
        parts.plan.steps_per_epoch,
        start_step=int(state.step),
    )
    final = _train_loop(
        Run(parts, dataset, workdir, checkpointer, logger, lock), state, stop
    )
  finally:  # also on errors: finish pending checkpoint writes
    checkpointer.close()
    if logger is not None:
      logger.close()
  return final


def _train_loop(run: Run, state, stop: preemption.StopRequest) -> dict:
  plan, step_fn, first = run.plan, run.setup.train_step, int(state.step)
  progress = Progress(plan.num_steps, first, plan.batch_size)
  sums, final, run_info = None, {}, {}
  for step in range(first, plan.num_steps):
    batch = run.setup.placement.to_global(run.dataset.train_batch(step))
    state, step_metrics = step_fn(state, batch)
    # compiled (or loaded) by this call: goes with the first log record
    if step == first:
      run_info = {f'run/{k}': v for k, v in step_fn.compile_info.items()}
    sums = metrics.accumulate(sums, step_metrics)
    done = step + 1
    log, evaluate, ckpt = (
        is_time(done, every, plan.num_steps)
        for every in (
            plan.log_every_steps,
            plan.eval_every_steps,
            plan.checkpoint_every_steps,
        )
    )
    if log or ckpt or evaluate or done % plan.sync_every_steps == 0:
      _raise_if_nonfinite(sums, run.checkpointer)
    if log or ckpt or evaluate:
      _raise_if_workdir_gone(run, done)
    if log:
      summary = {
          f'train/{k}': v
          for k, v in metrics.summarize_train(jax.device_get(sums)).items()
      }
      run.logger.write(done, {**summary, **progress.update(done), **run_info})
      sums, run_info = None, {}
    if evaluate:
      final = run.evaluate(state, done)
      run.logger.write(done, final)
    if ckpt:
      run.checkpointer.save(done, state)
    if done < plan.num_steps and stop.should_stop(done):
      _save_and_stop(
          done,
          state,
          sums,
          run.checkpointer,
          ckpt,
          stop.message(done, plan.num_steps),
      )
  if not final:  # resumed after the last step: evaluate what is there
    final = run.evaluate(state, plan.num_steps)
  return final


def _save_and_stop(
    step: int, state, sums, checkpointer, saved: bool, message: str
) -> None:
  """Saves `step` (unless just saved, or the loss went non-finite) and raises Preempted."""
  if sums is not None:
    _raise_if_nonfinite(sums, checkpointer)
  if not saved:
    checkpointer.save(step, state)
  # no process exits before every part of the save is written
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('adanet_jax.train.trainer.preempted')
  raise Preempted(message)


def _raise_if_nonfinite(sums: dict, checkpointer) -> None:
  """Waits for the queued steps and stops at the first non-finite loss."""
  first_bad = float(jax.device_get(sums['first_nonfinite_step']))
  if np.isfinite(first_bad):
    checkpointer.manager.wait_until_finished()
    latest = checkpointer.latest_step()
    kept = (
        'no checkpoint was written yet'
        if latest is None
        else f'the last checkpoint (step {latest}) is kept'
    )
    raise NonFiniteLossError(
        f'the loss is not finite at step {int(first_bad)} (0-based optimizer step); training '
        f'stopped, {kept}'
    )


class Progress:
  """Images/s and ETA between log points."""

  def __init__(self, num_steps: int, start_step: int, batch_size: int):
    self.num_steps, self.batch_size = num_steps, batch_size
    self.last_step, self.last_time = start_step, time.perf_counter()

  def update(self, step: int) -> dict:
    now = time.perf_counter()
    per_step = (now - self.last_time) / max(step - self.last_step, 1)
    self.last_step, self.last_time = step, now
    return {
        'train/images_per_s': self.batch_size / per_step,
        'train/progress': step / self.num_steps,
        'train/eta_s': per_step * (self.num_steps - step),
    }


def _raise_if_workdir_gone(run: Run, step: int) -> None:
  """Stops rather than log or save into a deleted workdir, which would end
  "done" with nothing to show; a stat of the lock file, no device sync. Only
  process 0 holds the file: in a multi-process job the others are ended by
  the launcher, as after any failure of process 0."""
  if not run.lock.held():
    raise WorkdirGoneError(
        f'workdir {run.workdir} was deleted while training (its '
        f'{rundir.LOCK_FILE} is gone); training stopped at step {step}; run '
        'the same command again to start over'
    )
