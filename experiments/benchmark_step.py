"""Benchmark of the train step (not a test): compile, first step, step time,
a warm-cache launch, and the skipping path's compile time.

  python -m experiments.benchmark_step --config=configs/cifar10.py --batch=128 \\
      --dtypes=float32,bfloat16 --models=unrolled,scanned --steps=2

For each model variant (`unrolled`: every block compiled on its own, as
before `resnet.ResNet.scan_min_run`; `scanned`: the default model, runs of
identical blocks under one loop) and compute dtype it prints trace+lower,
compile and first-step seconds on a cold compilation cache, then the mean of
the next `--steps` steps, images/s and GFLOP/s (3 x the forward FLOPs with
every block run, the usual training estimate). Then, for the scanned model,
three launches of the trainer's step (subprocesses on the same caches, each
building the trainer's `setup` as `python -m adanet_jax.main` does):
seconds from entering the loop (the step not yet traced) until the first
step starts, and that step's time. The first compiles the trainer's jit
(other shardings than the one timed before) and keeps it in both caches;
the second, with the executable cache (`adanet_jax.runtime.executables`) off,
traces and lowers it and loads it from JAX's compilation cache; the third
loads it from the executable cache without tracing. Last, the compile time of the skipping inference path against the masked
model at batch `--skip_batch`.

The cache is a fresh temporary directory unless `--cache_dir` is given (then
the "cold" figures are only cold on an empty one).

`--batchnorms=ours,flax` times each line with both BatchNorms back to back:
'ours' is adanet_jax.model.norm's (two-pass variance), 'flax' swaps in flax's
one-pass nn.BatchNorm (the implementation before it); repeat them
(`ours,flax,ours,flax`) on a busy machine.

With torch installed and the PyTorch twin (experiments/torch_twin.py)
present, each scanned line is followed by the twin's train step on the same
batch and our speed relative to it; `--notorch` skips it.
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
from adanet_jax.runtime import executables, jax_setup
from adanet_jax.train import optim, plan as plan_lib, steps, trainer
from experiments import torch_step

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file('config', 'configs/cifar10.py', 'Config file.',
                                          lock_config=True)
_BATCH = flags.DEFINE_integer('batch', 128, 'Global batch size of the train step.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Timed steps after the first.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to time.')
_MODELS = flags.DEFINE_list('models', ['unrolled', 'scanned'], 'Model variants to time.')
_CACHE = flags.DEFINE_string('cache_dir', None,
                             'Persistent compilation cache; default a fresh temporary one.')
_WARM = flags.DEFINE_bool('warm_launch', True,
                          'Time a second launch of the scanned train step (subprocess).')
_SKIP_BATCH = flags.DEFINE_integer('skip_batch', 256,
                                   'Batch of the skip-path compile comparison; 0: none.')
_BATCHNORMS = flags.DEFINE_list('batchnorms', ['ours'], "BatchNorms to time: 'ours' "
                                "(two-pass variance) and/or 'flax' (nn.BatchNorm, one pass).")
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch twin on the same batch.')
_EXECUTABLE_CACHE = flags.DEFINE_bool('executable_cache', True,
                                      'Internal, with --launch_only: use the executable cache.')
_LAUNCH_ONLY = flags.DEFINE_bool('launch_only', False,
                                 'Internal: be the warm launch; print its first-step time.')

VARIANTS = ('unrolled', 'scanned')
BATCHNORMS = {'ours': contextlib.nullcontext,
              'flax': lambda: mock.patch.object(norm, 'BatchNorm', nn.BatchNorm)}
STEPS_PER_EPOCH = 100


def example_batch(config, batch_size: int) -> dict:
  """The benchmark's fixed batch: normal images, cycling labels."""
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return {'image': jax.random.normal(jax.random.key(1), (batch_size, *shape)),
          'label': jnp.arange(batch_size) % config.model.num_classes}


def setup(config, variant: str, batch_size: int):
  """The model of `variant`, its train state, a random batch, the step key and
  the step's runtime hyperparameters."""
  model = factory.create_model(config)
  if variant == 'unrolled':
    model = model.clone(scan_min_run=None)
  plan = plan_lib.make_plan(config, STEPS_PER_EPOCH)
  tx, schedule = optim.create_optimizer(plan.optimizer)
  state = steps.create_train_state(model, tx, plan.image_shape, jax.random.key(0))
  return (model, state, example_batch(config, batch_size), jax.random.key(config.seed),
          steps.make_hparams(plan), steps.make_train_step(plan, schedule))


def benchmark(config, batch_size: int, num_steps: int, variant: str = 'scanned') -> dict:
  """Times one config and model variant; returns the figures as a dict."""
  model, state, batch, key, hparams, train_step = setup(config, variant, batch_size)
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
  return dict(trace_lower_s=t1 - t0, compile_s=t2 - t1, first_step_s=t3 - t2, step_s=step_s,
              images_per_s=batch_size / step_s,
              model_gflops_per_s=3 * 2 * dense_macs * batch_size / step_s / 1e9)


def launch_first_step(config, batch_size: int) -> tuple[float, float, str]:
  """A launch of the trainer's train step: its `trainer.setup`, initial state
  and first batch, then the first step.

  Returns:
    (seconds from entering the loop until the first step starts, as the
    trainer's loop spends them: trace, lower and compile or load from JAX's
    cache, or a load from the executable cache; seconds the step then runs;
    where the step came from).
  """
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  parts = trainer.setup(config, types.SimpleNamespace(image_shape=shape,
                                                     steps_per_epoch=STEPS_PER_EPOCH))
  state = parts.init_state()
  batch = parts.placement.to_global(jax.device_get(example_batch(config, batch_size)))
  t0 = time.perf_counter()
  info = parts.train_step.compile(state, batch)
  t1 = time.perf_counter()
  _, metrics = parts.train_step(state, batch)
  jax.block_until_ready(metrics)
  return t1 - t0, time.perf_counter() - t1, 'cache' if info['compile_cached'] else 'compiled'



def warm_launch(dtype: str, cache_dir: str, executable_cache: bool) -> tuple[float, float, str]:
  """Runs `launch_first_step` in a new process on `cache_dir`; its figures."""
  args = [a for a in sys.argv[1:] if a.startswith('--config')]
  args += [f'--batch={_BATCH.value}', f'--dtypes={dtype}', f'--cache_dir={cache_dir}',
           '--launch_only', f'--executable_cache={executable_cache}']
  out = subprocess.run([sys.executable, '-m', 'experiments.benchmark_step', *args],
                       capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  found = re.search(r'launch_start_s=([0-9.]+) first_step_s=([0-9.]+) from=(.*)', out.stdout)
  return float(found.group(1)), float(found.group(2)), found.group(3)


def skip_compile_times(config, batch_size: int) -> tuple[float, float]:
  """Compile seconds (trace and lower included) of the masked and the skipping
  inference forward pass of the scanned model at `batch_size`."""
  model, state, *_ = setup(config, 'scanned', 1)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  images = jnp.zeros((batch_size, *shape))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  masked = jax.jit(lambda v, x: model.apply(v, x, train=False, gate_mode='deterministic'))
  t0 = time.perf_counter()
  masked.lower(variables, images).compile()
  t1 = time.perf_counter()
  skip_inference.skip_apply.lower(model, variables, images).compile()
  return t1 - t0, time.perf_counter() - t1


def configured(base, dtype: str, batch_size: int):
  config = base.copy_and_resolve_references()
  config.model.dtype = dtype
  config.train.batch_size = batch_size
  return config


def check_flags() -> None:
  """Bad flag values: one line and exit 1, before anything is created."""
  for flag, allowed in (('models', VARIANTS), ('dtypes', tuple(factory.DTYPES)),
                        ('batchnorms', tuple(BATCHNORMS))):
    unknown = [v for v in getattr(FLAGS, flag) if v not in allowed]
    if unknown:
      sys.exit(f'error: --{flag}: {unknown[0]!r} is unknown; allowed: {", ".join(allowed)}')


def main(argv):
  del argv
  check_flags()
  cache = jax_setup.enable_compilation_cache(_CACHE.value or tempfile.mkdtemp(prefix='xla_'))
  if _LAUNCH_ONLY.value:  # as `python -m adanet_jax.main` runs: both caches on
    if _EXECUTABLE_CACHE.value:
      executables.enable(cache)
    config = configured(_CONFIG.value, _DTYPES.value[0], _BATCH.value)
    start, step, source = launch_first_step(config, _BATCH.value)
    print(f'launch_start_s={start:.3f} first_step_s={step:.3f} from={source}')
    return
  name = f'{_CONFIG.value.model.name}-{_CONFIG.value.model.depth}'
  print(f'backend {jax.default_backend()}, {jax.device_count()} device(s), {os.cpu_count()} '
        f'CPUs, batch {_BATCH.value}, cache {cache}', flush=True)
  for dtype in _DTYPES.value:
    config = configured(_CONFIG.value, dtype, _BATCH.value)
    for variant in _MODELS.value:
      for bn in _BATCHNORMS.value:
        with BATCHNORMS[bn]():  # the model is traced inside: the swap takes effect
          r = benchmark(config, _BATCH.value, _STEPS.value, variant)
        print(f'{name} {dtype} {variant} ({bn} BatchNorm): trace+lower '
              f'{r["trace_lower_s"]:.1f} s, compile {r["compile_s"]:.1f} s (sum '
              f'{r["trace_lower_s"] + r["compile_s"]:.1f} s), first step '
              f'{r["first_step_s"]:.1f} s, step {r["step_s"]:.2f} s, '
              f'{r["images_per_s"]:.1f} images/s, {r["model_gflops_per_s"]:.1f} GFLOP/s',
              flush=True)
      if _TORCH.value and variant == 'scanned':
        print_torch_twin(config, _BATCH.value, _STEPS.value, r['step_s'])
    if _WARM.value and 'scanned' in _MODELS.value:
      # The trainer's jit (its shardings) is not the one timed above: the
      # first launch compiles it and keeps it in both caches; the second,
      # without the executable cache, traces, lowers and loads it from JAX's;
      # the third loads it from the executable cache untraced.
      for launch, kept in (('first', True), ('second', False), ('third', True)):
        start, step, source = warm_launch(dtype, cache, kept)
        print(f'{name} {dtype} scanned, trainer launch {launch} (executable cache '
              f'{"on" if kept else "off"}): first step starts {start:.1f} s after entering '
              f'the loop ({source}), runs {step:.1f} s', flush=True)
  if _SKIP_BATCH.value:
    config = configured(_CONFIG.value, 'float32', _SKIP_BATCH.value)
    masked, skipping = skip_compile_times(config, _SKIP_BATCH.value)
    print(f'{name} float32 scanned inference at batch {_SKIP_BATCH.value}: masked compile '
          f'{masked:.1f} s, skipping compile {skipping:.1f} s ({skipping / masked:.2f}x)',
          flush=True)


def torch_twin(config, batch_size: int, num_steps: int) -> dict:
  """The PyTorch twin's train step on our benchmark batch (CPU); raises
  torch_step.TwinUnavailable without torch or the twin."""
  batch = jax.device_get(example_batch(config, batch_size))
  step = torch_step.make_step(config, np.asarray(batch['image']), np.asarray(batch['label']),
                              device='cpu')
  return torch_step.time_step(step, 'cpu', num_steps)


def print_torch_twin(config, batch_size: int, num_steps: int, our_step_s: float) -> None:
  """Prints the twin's figures and our speed relative to it, or why they are missing."""
  try:
    t = torch_twin(config, batch_size, num_steps)
  except torch_step.TwinUnavailable as e:
    print(f'  PyTorch twin: skipped: {e}', flush=True)
    return
  print(f'  PyTorch twin {config.model.dtype}: first step {t["first_step_s"]:.2f} s, step '
        f'{t["step_s"]:.2f} s, {batch_size / t["step_s"]:.1f} images/s; ours/twin speed '
        f'{t["step_s"] / our_step_s:.2f}x', flush=True)


if __name__ == '__main__':
  app.run(main)
