"""Benchmark of the train step (not a test): trace, compile and step time.

  python -m experiments.benchmark_step --config=configs/cifar10.py --batch=128 \
      --dtypes=float32,bfloat16 --steps=3

For each compute dtype it prints trace+lower, compile and first-step seconds,
then the mean of the next `--steps` steps, images/s, and achieved GFLOP/s two
ways: XLA's cost analysis of the compiled step, and 3 x the forward FLOPs of
the model with every block run (2 x MACs, the usual training estimate). The
persistent compilation cache is on: a second launch shows a compile time of a
few seconds (loading) instead of a full compilation.

`--batchnorms=ours,flax` times each dtype with both BatchNorms back to back:
'ours' is adanet_jax.norm's (two-pass variance), 'flax' swaps in flax's
one-pass nn.BatchNorm (the implementation before it); repeat them
(`ours,flax,ours,flax`) on a busy machine.

With torch installed and the PyTorch twin (experiments/torch_twin.py) present,
each line is followed by the twin's train step on the same batch (its first
step, then the mean of `--steps`) and our speed relative to it; `--notorch`
skips it.
"""

import contextlib
import time
from unittest import mock

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from adanet_jax import accounting, jax_setup, models, norm, optim, steps
from experiments import torch_step

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/cifar10.py', 'Config file.',
                                          lock_config=True)
_BATCH = flags.DEFINE_integer('batch', 128, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps after the first.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to time.')
_BATCHNORMS = flags.DEFINE_list('batchnorms', ['ours'], "BatchNorms to time: 'ours' "
                                "(two-pass variance) and/or 'flax' (nn.BatchNorm, one pass).")
_CACHE = flags.DEFINE_string('cache_dir', None, 'Persistent compilation cache directory.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch twin on the same batch.')


def example_batch(config, batch_size: int) -> dict:
  """The benchmark's fixed batch: normal images, cycling labels."""
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return {'image': jax.random.normal(jax.random.key(1), (batch_size, *shape)),
          'label': jnp.arange(batch_size) % config.model.num_classes}


def benchmark(config, batch_size: int, num_steps: int) -> dict:
  """Times one config; returns the figures as a dict."""
  model = models.create_model(config)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  tx, _ = optim.create_optimizer(config, steps_per_epoch=100)
  state = steps.create_train_state(config, model, tx, jax.random.key(0))
  batch = example_batch(config, batch_size)
  hparams = steps.make_hparams(config, steps_per_epoch=100)
  step = jax.jit(steps.make_train_step(config), donate_argnums=0)
  key = jax.random.key(config.seed)
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
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  dense_macs = accounting.cost_table(model, shape).dense
  return dict(trace_lower_s=t1 - t0, compile_s=t2 - t1, first_step_s=t3 - t2, step_s=step_s,
              images_per_s=batch_size / step_s,
              xla_gflops_per_s=cost.get('flops', 0.0) / step_s / 1e9,
              model_gflops_per_s=3 * 2 * dense_macs * batch_size / step_s / 1e9)


def main(argv):
  del argv
  cache = jax_setup.enable_compilation_cache(_CACHE.value)
  base = _CONFIG.value
  print(f'backend {jax.default_backend()}, {jax.device_count()} device(s), '
        f'batch {_BATCH.value}, cache {cache}')
  variants = {'ours': contextlib.nullcontext, 'flax': lambda: mock.patch.object(
      norm, 'BatchNorm', nn.BatchNorm)}
  unknown = set(_BATCHNORMS.value) - set(variants)
  if unknown:
    raise app.UsageError(f'--batchnorms: unknown {sorted(unknown)}; allowed: ours, flax')
  for dtype in _DTYPES.value:
    for bn in _BATCHNORMS.value:
      config = base.copy_and_resolve_references()
      config.model.dtype = dtype
      config.train.batch_size = _BATCH.value
      with variants[bn]():  # the model is traced inside: the swap takes effect
        r = benchmark(config, _BATCH.value, _STEPS.value)
      print(f'{config.model.name}-{config.model.depth} {dtype} {bn} BN: trace+lower '
            f'{r["trace_lower_s"]:.1f} s, compile {r["compile_s"]:.1f} s, first step '
            f'{r["first_step_s"]:.1f} s, step {r["step_s"]:.3f} s, {r["images_per_s"]:.1f} '
            f'images/s, {r["xla_gflops_per_s"]:.1f} GFLOP/s (XLA count), '
            f'{r["model_gflops_per_s"]:.1f} GFLOP/s (3 x forward)', flush=True)
      if _TORCH.value:
        print_torch_twin(config, _BATCH.value, _STEPS.value, r['step_s'])


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
