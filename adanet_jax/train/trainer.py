"""The training loop: periodic logs, evaluation and checkpoints, exact resume.

`setup` builds what a launch needs once: the run plan (`plan.RunPlan`, the
only reader of the config's numbers), the placement on a ('data',) mesh, the
model, the optimizer, the compiled train step and the evaluator. The loop
reads the plan; each periodic action sits behind `is_time`.

What a launch says: one line of where it starts (`start_line`: a resume, an
`init_from`, or fresh), progress and evaluation lines, and at the end the
final evaluation once, followed by where the outputs are
(`progress.outputs_lines`). A workdir whose run has finished says so and
shows its stored final evaluation without building the model or compiling
anything.
"""

import dataclasses
import logging
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
    profiling,
    progress,
    rundir,
    steps,
    workdir_lock,
)
from adanet_jax.train import placement as placement_lib
from adanet_jax.train import plan as plan_lib

logger = logging.getLogger(__name__)


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


def checked_plan(
    config: ml_collections.ConfigDict, dataset
) -> plan_lib.RunPlan:
  """The run plan of `config` on `dataset`, its values checked."""
  plan = plan_lib.make_plan(config, dataset.steps_per_epoch)
  checks.check_plan(plan, config)
  return plan


def setup(
    config: ml_collections.ConfigDict,
    dataset,
    devices=None,
    plan: plan_lib.RunPlan | None = None,
) -> Setup:
  """Builds the plan, placement, model, optimizer, train step and evaluator.

  Args:
    config: the run's config (checked).
    dataset: the input pipeline (`steps_per_epoch`, `image_shape`).
    devices: the mesh's devices; default all.
    plan: `checked_plan(config, dataset)`, if the caller has it already.
  """
  plan = plan or checked_plan(config, dataset)
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
  # The plan alone (no model, nothing compiled) says whether the run is done.
  plan = checked_plan(config, dataset)
  checkpoints.check_workdir(workdir, config, allow_config_change)
  if stored_final_eval(workdir, plan) is not None:
    # A live run of the workdir refuses the rerun, as for any other.
    with workdir_lock.acquire(workdir):
      final = stored_final_eval(workdir, plan)
      if final is not None:
        _show_finished(workdir, plan, final)
        return final
  parts = setup(config, dataset, plan=plan)
  info = metrics.run_info(config, hparam_fields)
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


def stored_final_eval(workdir: str, plan: plan_lib.RunPlan) -> dict | None:
  """The final evaluation of a finished run in `workdir`, or None.

  Finished: the newest checkpoint step directory is the plan's last step and
  metrics.jsonl holds that step's evaluation in every mode of the plan. Reads
  only; the checkpoint is not restored (`adanet_jax.load` reads it).
  """
  latest = checkpoints.step_dirs(rundir.checkpoint_dir(workdir))[:1]
  if latest != [plan.num_steps]:
    return None
  final = rundir.eval_record(workdir, plan.num_steps)
  if final is None or any(
      f'eval/{mode}/accuracy' not in final for mode in plan.eval_gate_modes
  ):
    return None
  return final


def _show_finished(workdir: str, plan: plan_lib.RunPlan, final: dict) -> None:
  logger.info(
      'already finished at step %d (checkpoint %s/%d); nothing to train, the '
      'final evaluation is the stored one',
      plan.num_steps,
      rundir.checkpoint_dir(workdir),
      plan.num_steps,
  )
  if jax.process_index() == 0:
    console = progress.ConsoleWriter(plan.num_steps, plan.steps_per_epoch)
    console.write(plan.num_steps, final)
    console.write_lines(progress.outputs_lines(workdir, plan.num_steps, final))


def start_line(
    checkpointer: checkpoints.Checkpointer, step: int, plan: plan_lib.RunPlan
) -> str:
  """Where a launch starts, by the resume order (`checkpoints`), after
  `checkpointer.resume` gave the state of `step`."""
  if checkpointer.latest_step() is not None:
    return (
        f'resuming from step {step} of {plan.num_steps} (checkpoint '
        f'{checkpointer.directory}/{step})'
    )
  if plan.init_from:
    return (
        f'starting from init_from {plan.init_from} (its parameters and '
        f'BatchNorm statistics, a fresh optimizer): step 0 of {plan.num_steps}'
    )
  return f'starting fresh: step 0 of {plan.num_steps}'


def _train(
    config, workdir, parts, dataset, start, changes, stop, lock, info
) -> dict:
  checkpointer = checkpoints.Checkpointer(workdir, config)
  state = checkpointer.resume(start)
  logger.info('%s', start_line(checkpointer, int(state.step), parts.plan))
  # The compiled step wants exactly the shardings it was compiled for.
  state = jax.device_put(state, parts.placement.replicated)
  metric_logger = None
  profiler = profiling.StepProfiler(
      os.path.join(workdir, rundir.PROFILE_DIR),
      parts.plan.profile_steps,
      int(state.step),
      parts.plan.num_steps,
  )
  try:
    if jax.process_index() == 0:
      with reported_write(
          f'{workdir}/{rundir.CONFIG_FILE}', 'training did not start'
      ):
        if changes:
          rundir.append_config_history(workdir, int(state.step), changes)
        rundir.write_config(workdir, config)
    metric_logger = metrics.MetricLogger(
        workdir,
        info,
        parts.plan.num_steps,
        parts.plan.steps_per_epoch,
        start_step=int(state.step),
    )
    run = Run(parts, dataset, workdir, checkpointer, metric_logger, lock)
    final = _train_loop(run, state, stop, profiler)
  finally:  # also on errors: finish pending checkpoint writes, end a trace
    profiler.close()
    checkpointer.close()
    if metric_logger is not None:
      metric_logger.close()
  if jax.process_index() == 0:
    metric_logger.console.write_lines(
        progress.outputs_lines(workdir, parts.plan.num_steps, final)
    )
  return final


def _train_loop(
    run: Run,
    state,
    stop: preemption.StopRequest,
    profiler: profiling.StepProfiler,
) -> dict:
  plan, step_fn, first = run.plan, run.setup.train_step, int(state.step)
  timer = Progress(plan.num_steps, plan.batch_size)
  sums, final, run_info = None, {}, {}
  for step in range(first, plan.num_steps):
    batch = run.setup.placement.to_global(run.dataset.train_batch(step))
    state, step_metrics = step_fn(state, batch)
    done = step + 1
    # compiled (or loaded) by this call: goes with the first log record
    if step == first:
      run_info = {f'run/{k}': v for k, v in step_fn.compile_info.items()}
      timer.first_step_done(done, step_metrics)
    profiler.step_done(done, (state, step_metrics))
    sums = metrics.accumulate(sums, step_metrics)
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
      run.logger.write(done, {**summary, **timer.update(done), **run_info})
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
    run.logger.write(plan.num_steps, final)
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
  """Images/s between log points and the ETA, from steady-state steps only:
  the clock starts when the launch's first step has finished, since that
  step's time is mostly compiling the train step.

  The ETA is the mean time of a step since then (evaluations and checkpoints
  included, as they will recur) times the steps left.
  """

  def __init__(self, num_steps: int, batch_size: int, clock=time.perf_counter):
    self.num_steps, self.batch_size, self.clock = num_steps, batch_size, clock
    self.start = self.last = None  # (completed steps, time)

  def first_step_done(self, step: int, outputs=None) -> None:
    """Starts the clock once the launch's first step (`step` completed
    steps), whose results are `outputs`, has run."""
    jax.block_until_ready(outputs)
    self.start = self.last = (step, self.clock())

  def update(self, step: int) -> dict:
    """The record of a log point after `step` completed steps (images/s and
    ETA left out while no step has been timed)."""
    now = self.clock()
    (start_step, start_time), (last_step, last_time) = self.start, self.last
    self.last = (step, now)
    record = {'train/progress': step / self.num_steps}
    if step > last_step and now > last_time:
      record['train/images_per_s'] = (
          self.batch_size * (step - last_step) / (now - last_time)
      )
    if step == self.num_steps:
      record['train/eta_s'] = 0.0
    elif step > start_step:
      per_step = (now - start_time) / (step - start_step)
      record['train/eta_s'] = per_step * (self.num_steps - step)
    return record


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
