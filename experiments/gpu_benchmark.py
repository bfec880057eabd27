r"""One-shot accelerator benchmark (not a test): our train step against the
PyTorch twin, a profile, and the real training loop against the bare step.

  python -m experiments.gpu_benchmark --out=DIR            # on the GPU, <= 6 min
  python -m experiments.gpu_benchmark --smoke --out=DIR    # tiny, on CPU, < 2 min

`experiments/gpu_benchmark.sh` wraps it for the lent H200 (wheels, $OUT).

What it measures, in this order, each part skipped (and said so) once the
time budget `--budget_s` is spent, the JSON rewritten after every part so a
cut-off run keeps what it finished:
  1. Train steps at batch 256 of ResNet-50 (224 px, the ImageNet config) and
     ResNet-110 (32 px, the CIFAR config), bfloat16 then float32: ours (the
     trainer's `setup`: its real jit, shardings and runtime hyperparameters;
     trace + lower + compile seconds) and the PyTorch twin on the same batch
     (eager, channels_last, `torch.autocast` bfloat16 for bfloat16; PyTorch's
     default TF32 convolutions for float32, as XLA's default precision).
     images/s, ours/twin speed, and model FLOP/s by the accounting convention:
     3 x forward MACs x 2 FLOPs per image (backward = 2 x forward), every
     block counted (the masked step computes every block), against the H200's
     790 TFLOP/s dense bfloat16 peak.
  2. A profile of the first run's step (ResNet-50 bfloat16; jax.profiler,
     the perfetto trace copied to the output when small) with the three ops
     that took the most device time, named with their HLO.
  3. The full training loop of the first run's model (`trainer.
     train_and_evaluate`: input from host memory, logging, the final
     evaluation and checkpoint) on an in-memory synthetic dataset of its
     image size, ~50 steps at its batch, against the bare step of part 1
     (images/s between log points after the first).

`--runs=resnet110:float32 --batch=128` picks the runs (the first is
profiled and looped) and the batch: the same figures on a CPU.
  4. torch.compile of the twin (ResNet-50 bfloat16) in a child process,
     killed after `--torch_compile_cap_s`.

Figures go to OUT/gpu_benchmark.json and a table to stdout. Works without
tensorflow (nothing here reads tfds; the TensorBoard writer needs only the
tensorboard package) and without the twin (its columns say why they are
empty).
"""

import os

# Both frameworks share the GPU: JAX must not take 75% of it up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from adanet_jax.runtime import jax_setup  # noqa: E402

PEAK_FLOPS = 790e12  # H200 dense bfloat16 tensor-core peak
_OUT = flags.DEFINE_string(
    'out',
    os.environ.get('OUT', 'gpu_benchmark_out'),
    'Directory for gpu_benchmark.json and the trace.',
)
_SMOKE = flags.DEFINE_bool(
    'smoke', False, 'Tiny models and sizes (CPU check of the script).'
)
_BUDGET = flags.DEFINE_float(
    'budget_s',
    330.0,
    'Seconds the whole run should take; a part '
    'starts only if its usual time is left.',
)
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per measurement.')
_LOOP_STEPS = flags.DEFINE_integer(
    'loop_steps', 50, 'Steps of the full training loop.'
)
_TORCH_COMPILE_CAP = flags.DEFINE_float(
    'torch_compile_cap_s', 150.0, 'Kill torch.compile after this many seconds.'
)
_RUNS = flags.DEFINE_list(
    'runs',
    None,
    'MODEL:DTYPE pairs to time, in order (default: '
    'all four; the first is also profiled and run in the full loop).',
)
_BATCH = flags.DEFINE_integer(
    'batch', 0, 'Batch of every run (0: 256, or 8 with --smoke).'
)
_CHILD = flags.DEFINE_string(
    'torch_compile_child',
    None,
    'Internal: MODEL:DTYPE to time with torch.compile.',
)

# name -> (config file, argument, image size, batch); the smoke stand-ins
# second (tiny CIFAR ResNets: a ResNet-50 compiles for a minute on a CPU).
MODELS = {
    'resnet50': (
        ('imagenet.py', 'resnet50', 224, 256),
        ('cifar10.py', 'depth=8', 16, 8),
    ),
    'resnet110': (
        ('cifar10.py', 'depth=110', 32, 256),
        ('cifar10.py', 'depth=8', 8, 8),
    ),
}
# (model, dtype) in order of importance: a cut-off run keeps the first ones.
RUNS = (
    ('resnet50', 'bfloat16'),
    ('resnet110', 'bfloat16'),
    ('resnet50', 'float32'),
    ('resnet110', 'float32'),
)
SMOKE_RUNS = (('resnet50', 'bfloat16'), ('resnet110', 'float32'))
DTYPES = ('bfloat16', 'float32')
# A step comparison at full size takes about this long on the H200 (compile
# included); none starts with less budget left.
PART_ESTIMATE_S = 70.0
SMOKE_BUDGET_S = 100.0


def load_config(model: str, dtype: str, smoke: bool):
  """The benchmark config of `model` in `dtype` (image size and batch set)."""
  from adanet_jax import config_lib  # pylint: disable=import-outside-toplevel

  file, arg, size, default_batch = MODELS[model][1 if smoke else 0]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.join(repo, 'configs', file)
  config = config_lib.load_config(f'{path}:{arg}' if arg else path)
  config.model.dtype = dtype
  config.data.image_size = size
  config.train.batch_size = config.eval.batch_size = (
      _BATCH.value or default_batch
  )
  config.train.sync_every_steps = 10 if jax.default_backend() == 'cpu' else 100
  return config


def synthetic_dataset(config, num_train: int, num_eval: int):
  """An in-memory dataset of normal float32 images (the tfds pipeline's
  output type) with cycling labels."""
  from adanet_jax.data import digits  # pylint: disable=import-outside-toplevel

  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((num_train + num_eval, *shape), dtype=np.float32)
  labels = (np.arange(num_train + num_eval) % config.model.num_classes).astype(
      np.int32
  )
  return digits.ArrayDataset(
      images[:num_train],
      labels[:num_train],
      images[num_train:],
      labels[num_train:],
      num_classes=config.model.num_classes,
      batch_size=config.train.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
  )


def model_flops_per_image(config) -> float:
  """3 x forward MACs x 2 FLOPs, every block counted."""
  from adanet_jax.model import accounting, factory  # pylint: disable=import-outside-toplevel

  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return (
      3 * 2 * accounting.cost_table(factory.create_model(config), shape).dense
  )


def time_ours(config, num_steps: int) -> tuple[dict, tuple]:
  """Our train step through the trainer's `setup` on one fixed batch.

  Returns the figures and (train step, state, batch) for the parts that follow.
  """
  from adanet_jax.train import trainer  # pylint: disable=import-outside-toplevel

  dataset = synthetic_dataset(
      config, config.train.batch_size, config.eval.batch_size
  )
  parts = trainer.setup(config, dataset)
  state = parts.init_state()
  batch = parts.placement.to_global(dataset.train_batch(0))
  runner = parts.train_step
  info = runner.compile(state, batch)
  t0 = time.perf_counter()
  state, metrics = runner(state, batch)
  jax.block_until_ready(metrics)
  t1 = time.perf_counter()
  for _ in range(2):  # untimed: let allocations settle
    state, metrics = runner(state, batch)
  jax.block_until_ready(metrics)
  t2 = time.perf_counter()
  # XLA:CPU can deadlock on many queued steps
  on_cpu = jax.default_backend() == 'cpu'
  # queued back to back on accelerators, as in training
  for _ in range(num_steps):
    state, metrics = runner(state, batch)
    if on_cpu:
      jax.block_until_ready(metrics)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t2) / num_steps
  loss = float(jax.device_get(metrics['loss'])) / config.train.batch_size
  return {
      'compile_s': info['compile_s'],
      'compile_cached': info['compile_cached'],
      'first_step_s': t1 - t0,
      'step_s': step_s,
      'loss': loss,
  }, (runner, state, batch, dataset)


def time_twin(
    config, batch: dict, num_steps: int, compile_model: bool = False
) -> dict:
  """The PyTorch twin's step on our batch; {'skipped': why} if it cannot run."""
  from experiments import torch_step  # pylint: disable=import-outside-toplevel

  try:
    torch, _ = torch_step.load_twin()
  except torch_step.TwinUnavailable as e:
    return {'skipped': str(e)}
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  host = jax.device_get(batch)
  try:
    step = torch_step.make_step(
        config,
        np.asarray(host['image']),
        np.asarray(host['label']),
        device,
        compile_model=compile_model,
    )
    result = {**torch_step.time_step(step, device, num_steps), 'device': device}
    del step
  except Exception as e:  # pylint: disable=broad-except
    # Our figures of this part are measured already: keep them.
    result = {'skipped': f'the twin failed: {type(e).__name__}: {e}'[:1000]}
  if device == 'cuda':
    torch.cuda.empty_cache()
  return result


def with_rates(result: dict, batch_size: int, flops_per_image: float) -> dict:
  if 'step_s' not in result:
    return result
  images_per_s = batch_size / result['step_s']
  return {
      **result,
      'images_per_s': images_per_s,
      'model_tflops_per_s': images_per_s * flops_per_image / 1e12,
      'fraction_of_peak': images_per_s * flops_per_image / PEAK_FLOPS,
  }


def step_comparison(model: str, dtype: str, smoke: bool, num_steps: int):
  """Part 1 for one (model, dtype): ours, the twin, the ratio."""
  config = load_config(model, dtype, smoke)
  flops = model_flops_per_image(config)
  ours, kept = time_ours(config, num_steps)
  twin = time_twin(config, jax.device_get(kept[2]), num_steps)
  b = config.train.batch_size
  file, arg = MODELS[model][1 if smoke else 0][:2]
  row = {
      'model': model,
      'config': f'{file}:{arg}',
      'dtype': dtype,
      'batch': b,
      'image_size': config.data.image_size,
      'model_gflops_per_image': flops / 1e9,
      'ours': with_rates(ours, b, flops),
      'twin': with_rates(twin, b, flops),
  }
  if 'step_s' in twin:
    row['ours_over_twin_speed'] = twin['step_s'] / ours['step_s']
  return row, kept


def profile_step(
    runner, state, batch, trace_dir: str, out_dir: str, num_steps: int = 3
):
  """Part 2: a profile of a few steps (`runner`: the compiled train step); the
  top device-time ops, named."""
  for _ in range(2):
    state, metrics = runner(state, batch)
  jax.block_until_ready(metrics)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(num_steps):
      state, metrics = runner(state, batch)
    jax.block_until_ready(metrics)
  result = {'steps': num_steps, 'trace_dir': trace_dir}
  try:
    hlo_text = runner.executable.as_text()
    result.update(top_ops(trace_dir, hlo_text, num_steps))
  except Exception as e:  # pylint: disable=broad-except
    result['top_ops_error'] = f'{type(e).__name__}: {e}'
  for root, _, files in os.walk(trace_dir):
    for name in files:
      path = os.path.join(root, name)
      if name.endswith('trace.json.gz') and os.path.getsize(path) < 15e6:
        shutil.copy(
            path, os.path.join(out_dir, 'profile_perfetto_trace.json.gz')
        )
        result['perfetto_trace'] = 'profile_perfetto_trace.json.gz'
  return result


def top_ops(
    trace_dir: str, hlo_text: str, num_steps: int, top: int = 3
) -> dict:
  """The HLO ops with the most time in the profile, from its XSpace file.

  Events are counted when their name is an instruction of the compiled step
  (the 'XLA Ops' line of a GPU, the op events of XLA:CPU's threads), on device
  planes ('/device:...') if there are any; if no name matches, every event
  counts. Each op is named with the start of its HLO instruction.
  """
  paths = [
      os.path.join(r, f)
      for r, _, fs in os.walk(trace_dir)
      for f in fs
      if f.endswith('.xplane.pb')
  ]
  data = jax.profiler.ProfileData.from_file(paths[0])
  hlo = {}
  for line in hlo_text.splitlines():
    stripped = line.strip().removeprefix('ROOT ').lstrip('%')
    if ' = ' in stripped:
      hlo.setdefault(stripped.split(' ', 1)[0], stripped[:240])
  planes = [p for p in data.planes if p.name.startswith('/device:')] or list(
      data.planes
  )
  events = [
      (e.name.lstrip('%'), e.duration_ns / 1e6)
      for p in planes
      for line in p.lines
      for e in line.events
  ]
  matched = [(name, ms) for name, ms in events if name in hlo]
  totals = {}
  for name, ms in matched or events:
    totals[name] = totals.get(name, 0.0) + ms
  total_ms = sum(totals.values())
  ranked = sorted(totals.items(), key=lambda kv: -kv[1])
  return {
      'events': 'HLO ops' if matched else 'all (no HLO op names found)',
      'total_ms_per_step': total_ms / num_steps,
      'top_ops': [
          {
              'name': name,
              'ms_per_step': ms / num_steps,
              'fraction': ms / total_ms,
              'hlo': hlo.get(name, ''),
          }
          for name, ms in ranked[:top]
      ],
  }


def full_loop(config, num_steps: int, bare_images_per_s: float) -> dict:
  """Part 3: the real trainer on an in-memory dataset against the bare step."""
  from adanet_jax.train import trainer  # pylint: disable=import-outside-toplevel

  b = config.train.batch_size
  dataset = synthetic_dataset(config, 2 * b, b)
  epochs = num_steps / dataset.steps_per_epoch
  config.train.num_epochs = epochs
  config.train.log_every_steps = max(num_steps // 5, 1)
  config.train.eval_every_epochs = 0.0  # only after the last step
  config.checkpoint.every_steps = 0  # only after the last step
  workdir = tempfile.mkdtemp(prefix='gpu_benchmark_workdir_')
  t0 = time.perf_counter()
  trainer.train_and_evaluate(config, workdir, dataset=dataset)
  wall_s = time.perf_counter() - t0
  records = [
      json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  compile_record = next(r for r in records if 'run/compile_s' in r)
  rates = [
      r['train/images_per_s'] for r in records if 'train/images_per_s' in r
  ]
  steady = float(np.mean(rates[1:])) if len(rates) > 1 else float('nan')
  return {
      'steps': num_steps,
      'batch': b,
      'wall_s': wall_s,
      'compile_s': compile_record['run/compile_s'],
      'compile_cached': compile_record['run/compile_cached'],
      'images_per_s_per_log': rates,
      'loop_images_per_s': steady,
      'bare_step_images_per_s': bare_images_per_s,
      'loop_over_bare': steady / bare_images_per_s,
  }


def torch_compile_in_child(smoke: bool, cap_s: float, num_steps: int) -> dict:
  """Part 4: torch.compile of the twin in a child process, killed after `cap_s`."""
  command = [
      sys.executable,
      '-m',
      'experiments.gpu_benchmark',
      '--torch_compile_child',
      'resnet50:bfloat16',
      f'--steps={num_steps}',
  ] + (['--smoke'] if smoke else [])
  try:
    # The child's JAX only counts MACs: on the CPU, it takes no GPU memory.
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=cap_s,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
    )
  except subprocess.TimeoutExpired:
    return {'skipped': f'torch.compile did not finish within {cap_s:.0f} s'}
  lines = [
      l
      for l in out.stdout.splitlines()
      if l.startswith('TORCH_COMPILE_RESULT ')
  ]
  if out.returncode or not lines:
    return {
        'skipped': f'torch.compile failed (exit {out.returncode}): '
        f'{(out.stderr or out.stdout)[-600:]}'
    }
  return json.loads(lines[-1].split(' ', 1)[1])


def child_main(spec: str, smoke: bool, num_steps: int) -> None:
  """The torch.compile child: prints one TORCH_COMPILE_RESULT line of JSON."""
  if smoke:
    _one_torch_thread()
  model, dtype = spec.split(':')
  config = load_config(model, dtype, smoke)
  shape = (
      config.train.batch_size,
      config.data.image_size,
      config.data.image_size,
      config.data.channels,
  )
  batch = {
      'image': np.random.default_rng(0).standard_normal(
          shape, dtype=np.float32
      ),
      'label': np.arange(shape[0]) % config.model.num_classes,
  }
  result = with_rates(
      time_twin(config, batch, num_steps, compile_model=True),
      config.train.batch_size,
      model_flops_per_image(config),
  )
  print(
      'TORCH_COMPILE_RESULT '
      + json.dumps({'model': model, 'dtype': dtype, **result})
  )


class Budget:
  """Seconds since the start and left of the budget."""

  def __init__(self, seconds: float):
    self.start, self.seconds = time.perf_counter(), seconds

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def left(self) -> float:
    return self.seconds - self.elapsed()


def run_all(
    out_dir: str,
    smoke: bool,
    budget: Budget,
    num_steps: int,
    loop_steps: int,
    compile_cap_s: float,
    runs,
) -> dict:
  """Runs the parts in order while the budget lasts; returns the figures."""
  cache = jax_setup.enable_compilation_cache(
      tempfile.mkdtemp(prefix='gpu_benchmark_cache_')
  )
  results = {
      'backend': jax.default_backend(),
      'devices': [str(d) for d in jax.devices()],
      'jax': jax.__version__,
      'torch': _torch_version(),
      'smoke': smoke,
      'compilation_cache': cache,
      'flops_convention': '3 x forward MACs x 2 FLOPs per image, every block counted; '
      f'peak {PEAK_FLOPS / 1e12:.0f} TFLOP/s (H200 dense bf16)',
      'steps': [],
      'skipped': [],
      'errors': [],
  }
  part_s = 0.0 if smoke else PART_ESTIMATE_S
  for model, dtype in runs:
    if budget.left() < part_s:
      results['skipped'].append(f'step {model} {dtype}: time budget spent')
      continue
    done = guarded(
        f'step {model} {dtype}',
        results,
        out_dir,
        lambda m=model, d=dtype: step_comparison(m, d, smoke, num_steps),
    )
    if done is None:
      continue
    row, kept = done
    runner, state, batch, _ = kept
    results['steps'].append({**row, 'at_s': budget.elapsed()})
    print_row(row)
    write_json(out_dir, results)
    if (model, dtype) == runs[0]:  # parts 2 and 3, while its runner lives
      trace_dir = tempfile.mkdtemp(prefix='gpu_benchmark_trace_')
      results['profile'] = guarded(
          'profile',
          results,
          out_dir,
          lambda r=runner, s=state, b=batch: profile_step(
              r, s, b, trace_dir, out_dir
          ),
      )
      if results['profile']:
        print_profile(results['profile'], f'{model} {dtype}')
      results['full_loop'] = guarded(
          'full loop',
          results,
          out_dir,
          lambda: full_loop(
              load_config(model, dtype, smoke),
              loop_steps,
              row['ours']['images_per_s'],
          ),
      )
      if results['full_loop']:
        print_loop(results['full_loop'], f'{model} {dtype}')
      write_json(out_dir, results)
    del runner, state, batch, done
  if budget.left() > (5 if smoke else 30):
    results['torch_compile'] = torch_compile_in_child(
        smoke, max(min(compile_cap_s, budget.left()), 5.0), num_steps
    )
    print(
        f'torch.compile twin resnet50 bfloat16: {json.dumps(results["torch_compile"])[:400]}',
        flush=True,
    )
  else:
    results['skipped'].append('torch.compile: time budget spent')
  results['total_s'] = budget.elapsed()
  write_json(out_dir, results)
  return results


def guarded(name: str, results: dict, out_dir: str, part):
  """Runs `part()`; a failure is recorded in results['errors'] and printed,
  and None returned: the run is one-shot, so one broken part must not cost
  the others."""
  try:
    return part()
  except Exception as e:  # pylint: disable=broad-except
    message = f'{type(e).__name__}: {e}'[:2000]
    results['errors'].append(
        {
            'part': name,
            'error': message,
            'traceback': traceback.format_exc().splitlines()[-12:],
        }
    )
    print(f'{name} FAILED: {message[:600]}', flush=True)
    write_json(out_dir, results)
    return None


def _torch_version() -> str | None:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  gpu = (
      f' on {torch.cuda.get_device_name(0)}'
      if torch.cuda.is_available()
      else ''
  )
  return torch.__version__ + gpu


def write_json(out_dir: str, results: dict) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'gpu_benchmark.json'), 'w') as f:
    json.dump(results, f, indent=1, default=str)


def _fmt(result: dict, key: str, spec: str) -> str:
  return format(result[key], spec) if key in result else '-'


def print_row(row: dict) -> None:
  ours, twin = row['ours'], row['twin']
  print(
      f'{row["model"]:>9} ({row["config"]}) {row["dtype"]:>8} b{row["batch"]} '
      f'{row["image_size"]}px | ours: '
      f'compile {ours["compile_s"]:.1f} s, step {ours["step_s"] * 1e3:.1f} ms, '
      f'{ours["images_per_s"]:,.0f} img/s, {ours["model_tflops_per_s"]:.1f} TFLOP/s '
      f'({100 * ours["fraction_of_peak"]:.1f}% of peak) | twin: '
      f'{_fmt(twin, "images_per_s", ",.0f")} img/s, '
      f'{_fmt(twin, "model_tflops_per_s", ".1f")} TFLOP/s | ours/twin '
      f'{_fmt(row, "ours_over_twin_speed", ".2f")}x'
      + (f' (twin skipped: {twin["skipped"]})' if 'skipped' in twin else ''),
      flush=True,
  )


def print_profile(profile: dict, run: str) -> None:
  if 'top_ops' not in profile:
    print(f'profile: no top ops ({profile.get("top_ops_error")})', flush=True)
    return
  print(
      f'profile {run}: {profile["total_ms_per_step"]:.1f} ms of op time per '
      'step; top ops:',
      flush=True,
  )
  for op in profile['top_ops']:
    print(
        f'  {op["name"]}: {op["ms_per_step"]:.2f} ms/step ({100 * op["fraction"]:.1f}%)  '
        f'{op["hlo"][:160]}',
        flush=True,
    )


def print_loop(loop: dict, run: str) -> None:
  print(
      f'full training loop {run}, {loop["steps"]} steps: {loop["wall_s"]:.1f} s '
      f'(compile {loop["compile_s"]:.1f} s, cached {bool(loop["compile_cached"])}), '
      f'{loop["loop_images_per_s"]:,.0f} img/s vs bare step {loop["bare_step_images_per_s"]:,.0f} '
      f'= {loop["loop_over_bare"]:.2f}',
      flush=True,
  )


def _one_torch_thread() -> None:
  """Smoke runs on a shared CPU: two OpenMP threads that spin on a busy
  machine made the twin's step 20x slower than one thread."""
  try:
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(1)
  except ImportError:
    pass


def main(argv):
  del argv
  if _CHILD.value:
    child_main(_CHILD.value, _SMOKE.value, _STEPS.value)
    return
  smoke = _SMOKE.value
  runs = SMOKE_RUNS if smoke else RUNS
  if _RUNS.value:
    runs = [tuple(r.split(':')) for r in _RUNS.value]
    bad = [
        r
        for r in runs
        if len(r) != 2 or r[0] not in MODELS or r[1] not in DTYPES
    ]
    if bad:
      sys.exit(
          f'error: --runs: {":".join(bad[0])!r} is not MODEL:DTYPE; models: '
          f'{", ".join(MODELS)}; dtypes: {", ".join(DTYPES)}'
      )
  jax_setup.quiet_library_logs()
  budget = Budget(
      min(_BUDGET.value, SMOKE_BUDGET_S) if smoke else _BUDGET.value
  )
  steps = min(_STEPS.value, 2) if smoke else _STEPS.value
  loop_steps = min(_LOOP_STEPS.value, 4) if smoke else _LOOP_STEPS.value
  compile_cap = (
      min(_TORCH_COMPILE_CAP.value, 20.0) if smoke else _TORCH_COMPILE_CAP.value
  )
  if smoke:
    _one_torch_thread()
  print(
      f'backend {jax.default_backend()}: {jax.devices()}; budget {budget.seconds:.0f} s',
      flush=True,
  )
  results = run_all(
      _OUT.value, smoke, budget, steps, loop_steps, compile_cap, runs
  )
  print(
      f'done in {results["total_s"]:.0f} s; figures in '
      f'{os.path.join(_OUT.value, "gpu_benchmark.json")}',
      flush=True,
  )


if __name__ == '__main__':
  app.run(main)
