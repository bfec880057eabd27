"""Profiling on demand: `train.profile_steps` train steps traced with JAX's
profiler (`jax.profiler.start_trace` / `stop_trace`).

The trace starts when the launch's first step has finished, because that step
compiles (or loads) the train step and would swamp the trace, and covers the
next `profile_steps` steps, fewer when the run ends sooner. The traced steps'
results are waited for before the trace stops, so the trace holds their
execution, not only their dispatch. Only process 0 traces: every process runs
the same program on its share of the batch.

The trace goes to `<workdir>/profile/plugins/profile/<time>/`: `<host>.xplane.pb`
for TensorBoard's profile plugin (`tensorboard --logdir <workdir>/profile`,
with the `tensorboard-plugin-profile` package) and `<host>.trace.json.gz`,
which https://ui.perfetto.dev opens.
"""

import logging

import jax

logger = logging.getLogger(__name__)


class StepProfiler:
  """Starts and stops the trace of a launch's steps; told of each finished
  step by `step_done`."""

  def __init__(
      self, logdir: str, profile_steps: int, first_step: int, num_steps: int
  ):
    """Traces steps `first_step + 1` to `first_step + profile_steps` (0-based
    optimizer steps; clamped to the run's `num_steps`) into `logdir`.

    Args:
      logdir: the profile directory.
      profile_steps: steps to trace (0: none).
      first_step: the step this launch starts from.
      num_steps: the steps of the whole run.
    """
    self.logdir = logdir
    self.start = first_step + 1  # completed steps when the trace starts
    self.stop = min(first_step + 1 + profile_steps, num_steps)
    self.tracing = False
    if profile_steps and self.stop <= self.start:
      logger.info(
          'train.profile_steps=%d: this launch has no step after its first '
          '(which compiles); nothing profiled',
          profile_steps,
      )
    if jax.process_index() != 0:
      self.stop = self.start

  def step_done(self, step: int, outputs) -> None:
    """After `step` completed steps; `outputs` are the last step's results."""
    if step == self.start and self.stop > self.start:
      logger.info(
          'profiling steps %d to %d into %s',
          self.start + 1,
          self.stop,
          self.logdir,
      )
      self.tracing = self._profiler_call(jax.profiler.start_trace, self.logdir)
    elif self.tracing and step == self.stop:
      jax.block_until_ready(outputs)
      if self.close():
        logger.info(
            'profile written to %s (tensorboard --logdir %s, or the '
            '*.trace.json.gz in https://ui.perfetto.dev)',
            self.logdir,
            self.logdir,
        )

  def close(self) -> bool:
    """Stops a trace still running (training ended early, by an error or a
    stop signal), so that the process can trace again; whether a trace was
    written."""
    if not self.tracing:
      return False
    self.tracing = False
    return self._profiler_call(jax.profiler.stop_trace)

  def _profiler_call(self, call, *args) -> bool:
    """`call(*args)`; a failure (a full disk, a read-only workdir) is one
    warning line and training goes on: the profile is an extra, as the
    compilation cache is."""
    try:
      call(*args)
    except (jax.errors.JaxRuntimeError, OSError, RuntimeError) as e:
      cause = str(e).splitlines()[0] if str(e) else type(e).__name__
      logger.warning(
          'profile not written to %s (%s); training goes on without it',
          self.logdir,
          cause,
      )
      return False
    return True
