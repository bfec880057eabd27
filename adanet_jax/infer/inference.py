"""Trained models outside the trainer: load a checkpoint, predict with gates.

  model = adanet_jax.load('workdirs/digits')   # or .../checkpoints[/<step>]
  images, labels = model.eval_split()          # preprocessed as in evaluation
  out = model.predict(images)                  # deterministic gates
  out.logits, out.executed, out.probs, out.macs

  model = adanet_jax.load('checkpoint.pth.tar', config=config)  # PyTorch weights (torch_io)

`load` reads the resolved config the trainer wrote (`rundir.read_config`)
and restores the checkpoint into an abstract state built on one device, so a
checkpoint written by N devices or processes loads on a single CPU or GPU.
`predict` cuts large inputs into batches itself and pads each batch to the
next of a few sizes (`bucket_sizes`: 8, 16, 32, ... up to the batch size), so
a notebook that predicts on batches of any size compiles once per bucket and
gate mode, not once per size.
"""

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from adanet_jax.data import batches, input_pipeline
from adanet_jax.errors import ConfigError
from adanet_jax.infer import skip_inference
from adanet_jax.model import accounting, factory, torch_io
from adanet_jax.train import checkpoints, checks, evaluation, optim, rundir, steps
from adanet_jax.train import plan as plan_lib


@dataclasses.dataclass(frozen=True)
class Prediction:
  """Per-image outputs of `LoadedModel.predict` (numpy, batch first).

  Attributes:
    logits: (N, classes) float32.
    gates: (N, blocks) the value each residual branch was multiplied by: hard
      0/1 in modes `deterministic` and `sample`, the execution probability in
      `expected`; 1 for blocks that always run.
    executed: (N, blocks) bool, whether each block's branch was computed
      (`expected` mode computes every branch).
    probs: (N, blocks) the gates' execution probabilities.
    macs: (N,) exact MACs of each image given `executed` (1 MAC = one
      multiply-add; see `adanet_jax.model.accounting`).
  """

  logits: np.ndarray
  gates: np.ndarray
  executed: np.ndarray
  probs: np.ndarray
  macs: np.ndarray

  @property
  def labels(self) -> np.ndarray:
    """The predicted class of each image."""
    return np.argmax(self.logits, axis=-1)


@dataclasses.dataclass
class LoadedModel:
  """A trained model on one device: config, module, parameters, BN statistics.

  Attributes:
    config: the resolved config of the run (locked).
    model: the `resnet.ResNet` the config describes.
    params: parameters, on `device`.
    batch_stats: BatchNorm running statistics, on `device`.
    step: the optimizer step of the checkpoint.
    workdir: the run's workdir (for a PyTorch file, the folder holding it).
  """

  config: ml_collections.ConfigDict
  model: Any
  params: Any
  batch_stats: Any
  step: int
  workdir: str

  @property
  def variables(self) -> dict:
    """The variables `model.apply` takes."""
    return {'params': self.params, 'batch_stats': self.batch_stats}

  @property
  def image_shape(self) -> tuple[int, int, int]:
    data = self.config.data
    return (data.image_size, data.image_size, data.channels)

  @functools.cached_property
  def costs(self) -> accounting.CostTable:
    """MACs per image of each part of the model."""
    return accounting.cost_table(self.model, self.image_shape)

  @functools.cached_property
  def _forward(self) -> Callable:
    # gate_mode is static: one compilation per (mode, bucket); the name is
    # what JAX's compile events report (`jit(predict_forward)`).
    def predict_forward(variables, images, key, gate_mode):
      return self.model.apply(
          variables, images, train=False, gate_mode=gate_mode, key=key
      )

    return jax.jit(predict_forward, static_argnames='gate_mode')

  def eval_split(
      self, limit: int | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the split the trainer evaluates on, in its order.

    Read through the dataset's `eval_batches()` (padding dropped), so the
    images are preprocessed exactly as in evaluation. Single process only.

    Args:
      limit: stop after this many examples (all if None).
    """
    images, labels, count = [], [], 0
    for batch in input_pipeline.create_dataset(self.config).eval_batches():
      real = batch['mask'] > 0
      images.append(batch['image'][real])
      labels.append(batch['label'][real])
      count += int(real.sum())
      if limit is not None and count >= limit:
        break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]

  def predict(
      self,
      images,
      gate_mode: str = 'deterministic',
      batch_size: int | None = None,
      seed: int = 0,
      skip: bool = False,
      input_scale: float | None = None,
  ) -> Prediction:
    """Runs the model on `images` in batches.

    Args:
      images: (N, H, W, C) preprocessed as the training data.
      gate_mode: 'deterministic' (execute iff the gate's logit for "execute"
        is larger), 'sample' (Gumbel noise, as in training) or 'expected'
        (every block, scaled by its execution probability).
      batch_size: the most images per compiled call; default the config's
        `eval.batch_size`. More images are cut into batches of this size; each
        batch is padded with zero images to the next of `bucket_sizes(
        batch_size)`, so any number of images compiles at most once per
        bucket. Padding changes no real image's outputs: in evaluation mode
        every image is computed on its own (BatchNorm uses its running
        averages).
      seed: Gumbel noise seed of mode 'sample': batch i uses fold_in(seed, i),
        so an image's noise depends on its batch and its place in it, not on
        the padding (JAX's threefry draws the leading rows of a larger shape
        as it draws a smaller one).
      skip: compute only the blocks that execute (`adanet_jax.infer.skip_inference`;
        deterministic gates only). Same outputs up to float rounding.

      input_scale: required for integer images, refused for float ones:
        integer images are multiplied by it, and the product must be what
        the model was trained on (e.g. a model trained on pixels/255 takes
        uint8 images with input_scale=1/255). Integer images without it are
        refused: raw pixels (0..16, 0..255) silently give wrong answers. The
        bundled pipelines also normalise by mean and standard deviation, so
        for them pass float images preprocessed as `eval_split` returns them.

    Returns:
      A `Prediction` with one row per image.

    Raises:
      ConfigError: bad shape, integer images without `input_scale`,
        non-finite pixels (the message names the first images), no images,
        or `batch_size` <= 0.
    """
    images = _checked_images(images, self.image_shape, input_scale)
    if batch_size is not None and batch_size <= 0:
      raise ConfigError(
          f'batch_size={batch_size} must be >= 1 (or None: eval.batch_size)'
      )
    apply = (
        self._skip_apply(gate_mode) if skip else self._apply_fn(gate_mode, seed)
    )
    logits, (gates, probs) = map_batches(
        apply, batch_size or self.config.eval.batch_size, images
    )
    executed = accounting.executed_branches(gates, gate_mode) != 0
    return Prediction(
        logits=logits,
        gates=gates,
        executed=executed,
        probs=probs,
        macs=self.costs.per_image(executed),
    )

  def _apply_fn(self, gate_mode: str, seed: int) -> Callable:
    """(batch index, images) -> (logits, (gates, probs)) on one device."""
    key = jax.random.key(seed)

    def apply(index, images):
      logits, aux = self._forward(
          self.variables,
          images,
          jax.random.fold_in(key, index),
          gate_mode=gate_mode,
      )
      return logits, (aux['gates'], aux['probs'])

    return apply

  def _skip_apply(self, gate_mode: str) -> Callable:
    """Like `_apply_fn`, computing only the executed blocks (deterministic only)."""
    skip_inference.check_skip_mode(gate_mode)

    def apply(index, images):
      del index
      logits, aux = skip_inference.skip_apply(
          self.model, self.variables, images, gate_mode=gate_mode
      )
      return logits, (aux['gates'], aux['probs'])

    return apply


def _checked_images(
    images, image_shape: tuple, input_scale: float | None
) -> np.ndarray:
  """`images` as float32 after the checks of `LoadedModel.predict`."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != image_shape:
    raise ConfigError(
        f'images must have shape (N, {", ".join(map(str, image_shape))}), '
        f'got {images.shape}'
    )
  if len(images) == 0:
    raise ConfigError(
        'images holds no image (shape (0, ...)); pass at least one'
    )
  integer = np.issubdtype(images.dtype, np.integer) or images.dtype == bool
  if integer and input_scale is None:
    raise ConfigError(
        f'images are {images.dtype} (raw pixels?); the model expects them '
        'preprocessed as in training: pass input_scale= (e.g. 1/255) or '
        'preprocessed float images'
    )
  if not integer and input_scale is not None:
    raise ConfigError(
        f'input_scale={input_scale} is only for integer images; these are '
        f'{images.dtype}'
    )
  images = images.astype(np.float32) * np.float32(
      1.0 if input_scale is None else input_scale
  )
  bad = np.flatnonzero(
      ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
  )
  if bad.size:
    raise ConfigError(
        f'{bad.size} image(s) hold NaN or infinite pixels (indices '
        f'{", ".join(map(str, bad[:5]))}{", ..." if bad.size > 5 else ""})'
    )
  return images


SMALLEST_BUCKET = 8


def bucket_sizes(batch_size: int) -> tuple[int, ...]:
  """The sizes `map_batches` pads a batch to: 8, 16, 32, ... below
  `batch_size`, then `batch_size` (64: 8, 16, 32, 64; 500: 8, ..., 256, 500).

  Doubling bounds the padding by the batch itself, and batches of 1 to 40
  images compile at most 4 times, whatever `batch_size`.
  """
  sizes = []
  size = SMALLEST_BUCKET
  while size < batch_size:
    sizes.append(size)
    size *= 2
  return (*sizes, batch_size)


def map_batches(fn: Callable, batch_size: int, *arrays: np.ndarray):
  """Applies `fn(batch_index, *batch)` to batches of `arrays`.

  Batches have `batch_size` rows but the last; each is padded
  (`batches.pad_and_mask`) to the next of `bucket_sizes(batch_size)`, so `fn`
  sees at most that many shapes (compilations) whatever the number of rows;
  padded rows are dropped from the result.

  Args:
    fn: returns a pytree of arrays with the batch on axis 0; row i of its
      output must depend on row i of its input alone.
    batch_size: the most examples per call.
    *arrays: arrays with the same length on axis 0.

  Returns:
    The pytree of `fn`'s outputs concatenated over batches, as numpy.
  """
  n = len(arrays[0])
  if n == 0 or batch_size <= 0:
    raise ValueError(
        f'need at least one example and a positive batch size, got {n} '
        f'examples and batch_size={batch_size}'
    )
  buckets = bucket_sizes(batch_size)
  outputs = []
  for index, start in enumerate(range(0, n, batch_size)):
    rows = min(batch_size, n - start)
    batch = batches.pad_and_mask(
        {i: a[start : start + rows] for i, a in enumerate(arrays)},
        next(b for b in buckets if b >= rows),
    )
    outputs.append(
        jax.device_get(fn(index, *(batch[i] for i in range(len(arrays)))))
    )
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *outputs)


def load(
    path: str,
    device: jax.Device | None = None,
    config: ml_collections.ConfigDict | None = None,
) -> LoadedModel:
  """Loads a trained model from a workdir, checkpoint directory or PyTorch file.

  Args:
    path: a workdir, its `checkpoints` directory (the latest step is
      loaded), one step directory inside it (`checkpoints/<step>`), or a
      PyTorch file, whatever its name (a reference-layout ConvNet-AIG or
      torchvision ResNet state_dict, or a checkpoint holding one, see
      `adanet_jax.model.torch_io`).
    device: where the parameters go; default the first local device.
    config: the model's config; for a PyTorch file required unless it holds
      one (`tools.export_torch` stores it), and used instead of it if given;
      not allowed otherwise (the workdir's own config is used).

  Returns:
    A `LoadedModel` whose arrays all live on `device`.
  """
  if torch_io.is_torch_file(path):
    return _load_torch(path, device or jax.local_devices()[0], config)
  if os.path.isfile(path):
    raise ConfigError(f'{path!r} {torch_io.NOT_TORCH_OR_CHECKPOINT}')
  if config is not None:
    raise ConfigError(
        f'{path!r} is a workdir or checkpoint: it is loaded with its own '
        'config.json; config= is only for PyTorch files'
    )
  workdir, step = _resolve(path)
  config = rundir.read_config(workdir)
  checks.validate(config)
  model = factory.create_model(config)
  abstract = _abstract_state(config, model, device or jax.local_devices()[0])
  state = _restore(workdir, abstract, step)
  return LoadedModel(
      config=config,
      model=model,
      params=state.params,
      batch_stats=state.batch_stats,
      step=int(state.step),
      workdir=workdir,
  )


def _load_torch(path: str, device: jax.Device, config) -> LoadedModel:
  """A PyTorch file's weights in the model `config` (default: the file's own
  config) describes, at the file's step (0 if it has none)."""
  stored = torch_io.read_file(path)
  config = torch_io.config_for(stored, config)
  checks.validate(config)
  model = factory.create_model(config)
  shape = (config.data.image_size, config.data.image_size, config.data.channels)
  # Fresh variables on `device` (the template; gates of a torchvision file keep them).
  with jax.default_device(device):
    variables = jax.jit(
        lambda key: model.init(key, jax.numpy.zeros((1, *shape)), train=False)
    )(jax.random.key(config.seed))
  variables = torch_io.restore_variables(stored, variables)
  return LoadedModel(
      config=config,
      model=model,
      params=variables['params'],
      batch_stats=variables['batch_stats'],
      step=stored.step or 0,
      workdir=os.path.dirname(os.path.abspath(path)),
  )


def _resolve(path: str) -> tuple[str, int | None]:
  """(workdir, step or None for the latest) of a workdir or checkpoint path."""
  path = os.path.abspath(path)
  if os.path.isdir(rundir.checkpoint_dir(path)):
    return path, None
  if os.path.basename(path) == rundir.CHECKPOINTS_DIR:
    return os.path.dirname(path), None
  parent = os.path.dirname(path)
  if (
      os.path.basename(parent) == rundir.CHECKPOINTS_DIR
      and os.path.basename(path).isdigit()
  ):
    return os.path.dirname(parent), int(os.path.basename(path))
  raise ConfigError(
      f'{path!r} is not a workdir, a checkpoints directory or a step directory'
  )


def _abstract_state(config, model, device: jax.Device):
  """The train state's shapes and dtypes, every leaf placed on `device`.

  Restoring into this, whatever sharding the checkpoint was written with,
  puts every array on the one device.
  """
  # only the state's shapes matter
  plan = plan_lib.make_plan(config, steps_per_epoch=1)
  tx, _ = optim.create_optimizer(plan.optimizer)
  return steps.abstract_train_state(
      model, tx, plan.image_shape, jax.sharding.SingleDeviceSharding(device)
  )


def _restore(workdir: str, abstract, step: int | None):
  # Read-only: safe on the workdir of a run still training.
  return checkpoints.restore_from(workdir, abstract, step)


def block_rates(executed: np.ndarray) -> np.ndarray:
  """Fraction of images that execute each block, as the trainer counts it."""
  executed = np.asarray(executed, np.float64)
  return executed.sum(axis=0) / len(executed)


def class_block_rates(
    labels: np.ndarray, executed: np.ndarray, num_classes: int
) -> np.ndarray:
  """(classes, blocks): fraction of each class's images that execute each block."""
  # Same sums as steps.eval_step, so evaluation.class_block_rates applies.
  one_hot = np.eye(num_classes)[np.asarray(labels)]
  sums = {
      'class_count': one_hot.sum(axis=0),
      'class_gates': one_hot.T @ np.asarray(executed, np.float64),
  }
  return evaluation.class_block_rates(sums)


def downsampling_blocks(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Indices of the blocks that downsample: the first of every stage but the first."""
  return tuple(
      int(i) for i in np.cumsum(factory.stage_sizes(config.model))[:-1]
  )


def gated_blocks(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Blocks whose gate decides per image (none in a gates-off model)."""
  if not config.model.gated:
    return ()
  fixed = set(factory.fixed_blocks(config))
  return tuple(
      i for i in range(factory.num_blocks(config.model)) if i not in fixed
  )
