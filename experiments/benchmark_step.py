"""Benchmark of the train step (not a test): compile, first step, step time,
a warm-cache launch, and the skipping path's compile time.

  python -m experiments.benchmark_step --config=configs/cifar10.py --batch=128 \\
      --dtypes=float32,bfloat16 --scan_blocks=off,on --steps=2

For each value of `model.scan_blocks` (`off`: every block compiled on its
own; `on`: runs of identical blocks under one loop, `model/scan.py`; `auto`:
what the config gives on this backend) and compute dtype it prints
trace+lower, compile and first-step seconds on a cold compilation cache,
then the mean of the next `--steps` steps, images/s and GFLOP/s (3 x the
forward FLOPs with every block run, the usual training estimate). Then two
launches of the trainer's step with the config as given (subprocesses on the
same cache, each building the trainer's `setup` as `python -m
adanet_jax.main` does): seconds from entering the loop (the step not yet
traced) until the first step starts, and that step's time. The first
compiles the trainer's jit (other shardings than the one timed before) and
keeps it in JAX's compilation cache; the second traces and lowers it and
loads it from there. Last, the compile time of the skipping inference path
against the masked model at batch `--skip_batch`.

The cache is a fresh temporary directory unless `--cache_dir` is given (then
the "cold" figures are only cold on an empty one).

`--batchnorms=ours,flax` times each line with both BatchNorms back to back:
'ours' is adanet_jax.model.norm's (two-pass variance), 'flax' swaps in flax's
one-pass nn.BatchNorm (the implementation before it); repeat them
(`ours,flax,ours,flax`) on a busy machine.

With torch installed and the PyTorch twin (adanet_jax/torch_model.py)
present, the lines of each dtype are followed by the twin's train step on the
same batch and our speed relative to it; `--notorch` skips it.
"""

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from unittest import mock

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from adanet_jax.infer import skip_inference
from adanet_jax.model import accounting, factory, norm
from adanet_jax.runtime import jax_setup
from adanet_jax.train import optim, steps, trainer
from adanet_jax.train import plan as plan_lib
from experiments import torch_step

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/cifar10.py', 'Config file.', lock_config=True
)
_BATCH = flags.DEFINE_integer(
    'batch', 128, 'Global batch size of the train step.'
)
_STEPS = flags.DEFINE_integer('steps', 2, 'Timed steps after the first.')
_DTYPES = flags.DEFINE_list(
    'dtypes', ['float32', 'bfloat16'], 'Compute dtypes to time.'
)
_SCAN_BLOCKS = flags.DEFINE_list(
    'scan_blocks', ['off', 'on'], 'Values of model.scan_blocks to time.'
)
_CACHE = flags.DEFINE_string(
    'cache_dir',
    None,
    'Persistent compilation cache; default a fresh temporary one.',
)
_WARM = flags.DEFINE_bool(
    'warm_launch',
    True,
    "Time two launches of the trainer's train step (subprocesses).",
)
_SKIP_BATCH = flags.DEFINE_integer(
    'skip_batch', 256, 'Batch of the skip-path compile comparison; 0: none.'
)
_BATCHNORMS = flags.DEFINE_list(
    'batchnorms',
    ['ours'],
    "BatchNorms to time: 'ours' "
    "(two-pass variance) and/or 'flax' (nn.BatchNorm, one pass).",
)
_TORCH = flags.DEFINE_bool(
    'torch', True, 'Also time the PyTorch twin on the same batch.'
)
_LAUNCH_ONLY = flags.DEFINE_bool(
    'launch_only',
    False,
    'Internal: be the warm launch; print its first-step time.',
)

BATCHNORMS = {
    'ours': contextlib.nullcontext,
    'flax': lambda: mock.patch.object(norm, 'BatchNorm', nn.BatchNorm),
}
STEPS_PER_EPOCH = 100


def example_batch(config, batch_size: int) -> dict:
  """The benchmark's fixed batch: normal images, cycling labels."""
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return {
      'image': jax.random.normal(jax.random.key(1), (batch_size, *shape)),
      'label': jnp.arange(batch_size) % config.model.num_classes,
  }


def setup(config, batch_size: int):
  """The model, its train state, a random batch, the step key and the step's
  runtime hyperparameters."""
  model = factory.create_model(config)
  plan = plan_lib.make_plan(config, STEPS_PER_EPOCH)
  tx, schedule = optim.create_optimizer(plan.optimizer)
  state = steps.create_train_state(
      model, tx, plan.image_shape, jax.random.key(0)
  )
  return (
      model,
      state,
      example_batch(config, batch_size),
      jax.random.key(config.seed),
      steps.make_hparams(plan),
      steps.make_train_step(plan, schedule),
  )


def benchmark(config, batch_size: int, num_steps: int) -> dict:
  """Times one config; returns the figures as a dict."""
  model, state, batch, key, hparams, train_step = setup(config, batch_size)
  step = jax.jit(train_step, donate_argnums=0)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch, key, hparams)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  state, metrics = compiled(state, batch, key, hparams)
  jax.block_until_ready(metrics)
  t3 = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = compiled(state, batch, key, hparams)
    jax.block_until_ready(metrics)  # one step at a time: no queueing on CPU
  t4 = time.perf_counter()
  step_s = (t4 - t3) / max(num_steps, 1)
  dense_macs = accounting.cost_table(model, batch['image'].shape[1:]).dense
  return dict(
      trace_lower_s=t1 - t0,
      compile_s=t2 - t1,
      first_step_s=t3 - t2,
      step_s=step_s,
      images_per_s=batch_size / step_s,
      model_gflops_per_s=3 * 2 * dense_macs * batch_size / step_s / 1e9,
  )


def launch_first_step(config, batch_size: int) -> tuple[float, float, str]:
  """A launch of the trainer's train step: its `trainer.setup`, initial state
  and first batch, then the first step.

  Returns:
    (seconds from entering the loop until the first step starts, as the
    trainer's loop spends them: trace, lower and compile or load from JAX's
    cache; seconds the step then runs; where the step came from).
  """
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  parts = trainer.setup(
      config,
      types.SimpleNamespace(image_shape=shape, steps_per_epoch=STEPS_PER_EPOCH),
  )
  state = parts.init_state()
  batch = parts.placement.to_global(
      jax.device_get(example_batch(config, batch_size))
  )
  t0 = time.perf_counter()
  info = parts.train_step.compile(state, batch)
  t1 = time.perf_counter()
  _, metrics = parts.train_step(state, batch)
  jax.block_until_ready(metrics)
  source = "JAX's cache" if info['compile_cached'] else 'compiled'
  return t1 - t0, time.perf_counter() - t1, source


def warm_launch(dtype: str, cache_dir: str) -> tuple[float, float, str]:
  """Runs `launch_first_step` in a new process on `cache_dir`; its figures."""
  args = [a for a in sys.argv[1:] if a.startswith('--config')]
  args += [
      f'--batch={_BATCH.value}',
      f'--dtypes={dtype}',
      f'--cache_dir={cache_dir}',
      '--launch_only',
  ]
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark_step', *args],
      capture_output=True,
      text=True,
      check=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  found = re.search(
      r'launch_start_s=([0-9.]+) first_step_s=([0-9.]+) from=(.*)', out.stdout
  )
  return float(found.group(1)), float(found.group(2)), found.group(3)


def skip_compile_times(config, batch_size: int) -> tuple[float, float]:
  """Compile seconds (trace and lower included) of the masked and the skipping
  inference forward pass of the config's model at `batch_size`."""
  model, state, *_ = setup(config, 1)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  images = jnp.zeros((batch_size, *shape))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  masked = jax.jit(
      lambda v, x: model.apply(v, x, train=False, gate_mode='deterministic')
  )
  t0 = time.perf_counter()
  masked.lower(variables, images).compile()
  t1 = time.perf_counter()
  skip_inference.skip_apply.lower(model, variables, images).compile()
  return t1 - t0, time.perf_counter() - t1


def configured(
    base, dtype: str, batch_size: int, scan_blocks: str | None = None
):
  """`base` with these values; `scan_blocks` None keeps the config's."""
  config = base.copy_and_resolve_references()
  config.model.dtype = dtype
  config.train.batch_size = batch_size
  if scan_blocks is not None:
    config.model.scan_blocks = scan_blocks
  return config


def check_flags() -> None:
  """Bad flag values: one line and exit 1, before anything is created."""
  for flag, allowed in (
      ('scan_blocks', factory.SCAN_BLOCKS),
      ('dtypes', tuple(factory.DTYPES)),
      ('batchnorms', tuple(BATCHNORMS)),
  ):
    unknown = [v for v in getattr(FLAGS, flag) if v not in allowed]
    if unknown:
      sys.exit(
          f'error: --{flag}: {unknown[0]!r} is unknown; allowed: {", ".join(allowed)}'
      )


def main(argv):
  del argv
  check_flags()
  cache = jax_setup.enable_compilation_cache(
      _CACHE.value or tempfile.mkdtemp(prefix='xla_')
  )
  if _LAUNCH_ONLY.value:  # as `python -m adanet_jax.main` runs: JAX's cache on
    config = configured(_CONFIG.value, _DTYPES.value[0], _BATCH.value)
    start, step, source = launch_first_step(config, _BATCH.value)
    print(f'launch_start_s={start:.3f} first_step_s={step:.3f} from={source}')
    return
  name = f'{_CONFIG.value.model.name}-{_CONFIG.value.model.depth}'
  print(
      f'backend {jax.default_backend()}, {jax.device_count()} device(s), {os.cpu_count()} '
      f'CPUs, batch {_BATCH.value}, cache {cache}',
      flush=True,
  )
  for dtype in _DTYPES.value:
    ours = {}  # step seconds per line, for the twin's comparison
    for scan_blocks in _SCAN_BLOCKS.value:
      config = configured(_CONFIG.value, dtype, _BATCH.value, scan_blocks)
      for bn in _BATCHNORMS.value:
        with BATCHNORMS[
            bn
        ]():  # the model is traced inside: the swap takes effect
          r = benchmark(config, _BATCH.value, _STEPS.value)
        label = f'scan_blocks={scan_blocks} ({bn} BatchNorm)'
        ours[label] = r['step_s']
        print(
            f'{name} {dtype} {label}: trace+lower '
            f'{r["trace_lower_s"]:.1f} s, compile {r["compile_s"]:.1f} s (sum '
            f'{r["trace_lower_s"] + r["compile_s"]:.1f} s), first step '
            f'{r["first_step_s"]:.1f} s, step {r["step_s"]:.2f} s, '
            f'{r["images_per_s"]:.1f} images/s, {r["model_gflops_per_s"]:.1f} GFLOP/s',
            flush=True,
        )
    if _TORCH.value and ours:
      print_torch_twin(
          configured(_CONFIG.value, dtype, _BATCH.value),
          _BATCH.value,
          _STEPS.value,
          ours,
      )
    if _WARM.value:
      # The trainer's jit (its shardings) is not the one timed above: the
      # first launch compiles it and keeps it in JAX's cache; the second
      # traces, lowers and loads it from there.
      scan_blocks = _CONFIG.value.model.scan_blocks
      for launch in ('first', 'second'):
        start, step, source = warm_launch(dtype, cache)
        print(
            f'{name} {dtype} scan_blocks={scan_blocks}, trainer launch {launch}: first '
            f'step starts {start:.1f} s after entering the loop ({source}), runs '
            f'{step:.1f} s',
            flush=True,
        )
  if _SKIP_BATCH.value:
    config = configured(_CONFIG.value, 'float32', _SKIP_BATCH.value)
    masked, skipping = skip_compile_times(config, _SKIP_BATCH.value)
    print(
        f'{name} float32 scan_blocks={config.model.scan_blocks} inference at batch '
        f'{_SKIP_BATCH.value}: masked compile {masked:.1f} s, skipping compile '
        f'{skipping:.1f} s ({skipping / masked:.2f}x)',
        flush=True,
    )


def torch_twin(config, batch_size: int, num_steps: int) -> dict:
  """The PyTorch twin's train step on our benchmark batch (CPU); raises
  torch_step.TwinUnavailable without torch or the twin."""
  batch = jax.device_get(example_batch(config, batch_size))
  step = torch_step.make_step(
      config,
      np.asarray(batch['image']),
      np.asarray(batch['label']),
      device='cpu',
  )
  return torch_step.time_step(step, 'cpu', num_steps)


def print_torch_twin(
    config, batch_size: int, num_steps: int, ours: dict
) -> None:
  """Prints the twin's figures and the speed of each of `ours` ({line: step
  seconds}) relative to it, or why they are missing."""
  try:
    t = torch_twin(config, batch_size, num_steps)
  except torch_step.TwinUnavailable as e:
    print(f'  PyTorch twin: skipped: {e}', flush=True)
    return
  speeds = ', '.join(
      f'{label} {t["step_s"] / step_s:.2f}x' for label, step_s in ours.items()
  )
  print(
      f'  PyTorch twin {config.model.dtype}: first step {t["first_step_s"]:.2f} s, step '
      f'{t["step_s"]:.2f} s, {batch_size / t["step_s"]:.1f} images/s; ours/twin speed: '
      f'{speeds}',
      flush=True,
  )


if __name__ == '__main__':
  app.run(main)
