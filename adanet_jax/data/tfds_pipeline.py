"""tensorflow-datasets pipelines: cifar10, cifar100 and imagenet2012.

Each dataset has the interface of `input_pipeline` (`train_batch(step)`,
`eval_batches()`, `num_train`, `num_eval`, `num_classes`, `image_shape`,
`steps_per_epoch`), built on tf.data with parallel decoding and prefetch.

Exact resume. Epoch e of the training split is read with tfds file shuffling
and a shuffle buffer, both seeded from (seed, e). `train_batch(step)` takes
the next batch of an internal iterator when `step` is the step after the last
one asked for, and otherwise rebuilds the iterator for the epoch of `step`
and skips to the batch within the epoch. Augmentation uses TF's stateless
random ops seeded from (seed, position of the example in the global stream,
i.e. step x global batch + index in the global batch). The batch of a step,
images and augmentation included, is therefore a function of (seed, step)
for a given number of processes (each reads its own part of the data).

Multi-process. Each process reads its own part of every split
(`tfds.split_for_jax_process`) and yields its share, batch / process count,
of every global batch; the trainer assembles global arrays from these shares.
Every process yields the same number of evaluation batches: the last ones are
padded (zero images, mask 0).

Split sizes come from SPLIT_SIZES, not from tfds metadata: mock data
(`tfds.testing.mock_data`) carries none, and tests override the table. A
split that yields another number of examples than the table says is an error.

Decoding and augmentation: `adanet_jax.data.augment`.
"""

import dataclasses
import os

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from adanet_jax.data import augment, batches
from adanet_jax.errors import ConfigError

# Global examples per split: (train, eval). Tests replace entries (mock data
# has no split metadata).
SPLIT_SIZES = {
    'cifar10': (50_000, 10_000),
    'cifar100': (50_000, 10_000),
    'imagenet2012': (1_281_167, 50_000),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What differs between the tfds datasets."""

  train_split: str
  eval_split: str
  num_classes: int
  family: str  # 'cifar' | 'imagenet': decoding and augmentation
  shuffle_buffer: (
      int  # examples; CIFAR: the whole split (a uniform permutation)
  )
  prepare_hint: str  # how to prepare it, {data_dir} and {manual_dir} filled in


_PREPARE = (
    'prepare it once where there is network access: python -c "import '
    "tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}')"
    '.download_and_prepare()" (writes {data_dir}/{name}; copy that here if prepared '
    'elsewhere); or point --config.data.data_dir (or $TFDS_DATA_DIR) at a directory '
    'where it is prepared'
)
_PREPARE_IMAGENET = (
    'imagenet2012 needs a manual download: register at https://image-net.org/download-images, '
    'put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into {manual_dir}, then run '
    "python -c \"import tensorflow_datasets as tfds; tfds.builder('imagenet2012', "
    "data_dir='{data_dir}').download_and_prepare()\" (hours; about 155 GB of TFRecords); or "
    'point --config.data.data_dir (or $TFDS_DATA_DIR) at a directory where it is prepared'
)

SPECS = {
    'cifar10': DatasetSpec('train', 'test', 10, 'cifar', 50_000, _PREPARE),
    'cifar100': DatasetSpec('train', 'test', 100, 'cifar', 50_000, _PREPARE),
    'imagenet2012': DatasetSpec(
        'train', 'validation', 1000, 'imagenet', 10_000, _PREPARE_IMAGENET
    ),
}


def derived_seed(*values: int) -> int:
  """A 31-bit seed that is a function of `values` only."""
  return int(np.random.SeedSequence(list(values)).generate_state(1)[0] >> 1)


class TfdsDataset:
  """A tfds dataset behind the `input_pipeline` interface (see module doc).

  Args:
    name: a key of SPECS.
    batch_size, eval_batch_size: global batch sizes.
    seed: data order and augmentation seed.
    image_size: output height and width (ImageNet; CIFAR images stay 32).
    data_dir: tfds data directory; None for tfds's default.
    process_index, process_count: this process and how many read the data
      (default: JAX's).
  """

  def __init__(
      self,
      name: str,
      *,
      batch_size: int,
      eval_batch_size: int,
      seed: int,
      image_size: int,
      data_dir: str | None = None,
      process_index: int | None = None,
      process_count: int | None = None,
  ):
    self.name, self.spec = name, SPECS[name]
    self.batch_size, self.eval_batch_size, self.seed = (
        batch_size,
        eval_batch_size,
        seed,
    )
    self.image_size = image_size if self.spec.family == 'imagenet' else 32
    self.num_train, self.num_eval = SPLIT_SIZES[name]
    self.process_index = (
        jax.process_index() if process_index is None else process_index
    )
    self.process_count = (
        jax.process_count() if process_count is None else process_count
    )
    self._check_batch_sizes()
    self._builder = tfds.builder(name, data_dir=data_dir or None)
    self._check_prepared()
    self._iterator, self._next_step = None, None

  def _check_batch_sizes(self):
    batches.check_batch_sizes(
        self.batch_size,
        self.eval_batch_size,
        self.num_train,
        self.process_count,
        self.name,
    )

  def _check_prepared(self):
    try:
      self._builder.as_dataset(split=self.spec.eval_split)
    except AssertionError:  # tfds: "could not find data in <data_dir>"
      root = str(self._builder.data_dir_root)
      hint = self.spec.prepare_hint.format(
          name=self.name,
          data_dir=root,
          manual_dir=os.path.join(root, 'downloads', 'manual'),
      )
      raise ConfigError(
          f'dataset {self.name} is not prepared in {root} (no '
          f'{self._builder.data_dir}): {hint}'
      ) from None

  @property
  def num_classes(self) -> int:
    return self.spec.num_classes

  @property
  def image_shape(self) -> tuple[int, ...]:
    return (self.image_size, self.image_size, 3)

  @property
  def steps_per_epoch(self) -> int:
    """Full global batches per epoch; every epoch is a fresh shuffle."""
    return self.num_train // self.batch_size

  # Training.

  def train_batch(self, step: int) -> dict:
    """This process's share of the global batch of optimizer step `step`."""
    if self._iterator is None or step != self._next_step:
      self._iterator = self._train_batches(step)
    batch = next(self._iterator)
    self._next_step = step + 1
    return batch

  def _train_batches(self, start_step: int):
    epoch, index = divmod(start_step, self.steps_per_epoch)
    while True:
      remaining = self.steps_per_epoch - index
      count = 0
      for count, batch in enumerate(
          tfds.as_numpy(self._train_epoch(epoch, index)), 1
      ):
        yield batch
      if count != remaining:
        raise RuntimeError(
            f'{self.name} {self.spec.train_split}: epoch {epoch} gave {count} batches of '
            f'{self._local(self.batch_size)} from batch {index} on, expected {remaining}: '
            f'SPLIT_SIZES[{self.name!r}] = {SPLIT_SIZES[self.name]} does not match the data'
        )
      epoch, index = epoch + 1, 0

  def _train_epoch(self, epoch: int, index: int) -> tf.data.Dataset:
    """Batches `index`... of epoch `epoch` (this process's share)."""
    local = self._local(self.batch_size)
    shuffle_seed = derived_seed(self.seed, epoch)
    ds = self._read(self.spec.train_split, shuffle_seed)
    ds = ds.shuffle(
        self.spec.shuffle_buffer,
        seed=shuffle_seed,
        reshuffle_each_iteration=False,
    )
    ds = ds.take(self.steps_per_epoch * local).skip(index * local)
    first = (
        epoch * self.steps_per_epoch + index
    ) * local  # this process's example count
    positions = tf.data.Dataset.range(
        first, first + (self.steps_per_epoch - index) * local
    )
    ds = tf.data.Dataset.zip(positions, ds).map(
        self._train_example, num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def _train_example(self, position: tf.Tensor, example: dict) -> dict:
    local = self._local(self.batch_size)
    step, i = position // local, position % local
    global_position = step * self.batch_size + self.process_index * local + i
    seed = augment.example_seed(self.seed, global_position)
    if self.spec.family == 'cifar':
      image = augment.cifar_train_image(example['image'], seed)
    else:
      image = augment.imagenet_train_image(
          example['image'], seed, self.image_size
      )
    return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

  # Evaluation.

  def eval_batches(self):
    """This process's share of every evaluation batch, the last ones padded
    and masked (mask 1 real, 0 padding). Every process yields the same number.
    """
    local = self._local(self.eval_batch_size)
    per_process = -(-self.num_eval // self.process_count)
    num_batches = -(-per_process // local)
    ds = self._read(self.spec.eval_split).map(
        self._eval_example, num_parallel_calls=tf.data.AUTOTUNE
    )
    ds = ds.batch(local).prefetch(tf.data.AUTOTUNE)
    seen = yielded = 0
    for batch in tfds.as_numpy(ds):
      seen += len(batch['label'])
      yielded += 1
      yield batches.pad_and_mask(batch, local)
    for _ in range(yielded, num_batches):
      yield batches.pad_and_mask(
          {
              'image': np.zeros((0, *self.image_shape), np.float32),
              'label': np.zeros((0,), np.int32),
          },
          local,
      )
    if not self.num_eval // self.process_count <= seen <= per_process:
      raise RuntimeError(
          f'{self.name} {self.spec.eval_split}: this process read {seen} examples, expected '
          f'{self.num_eval} / {self.process_count} processes: SPLIT_SIZES[{self.name!r}] = '
          f'{SPLIT_SIZES[self.name]} does not match the data'
      )

  def _eval_example(self, example: dict) -> dict:
    if self.spec.family == 'cifar':
      image = augment.cifar_eval_image(example['image'])
    else:
      image = augment.imagenet_eval_image(example['image'], self.image_size)
    return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

  # Reading.

  def _local(self, global_batch: int) -> int:
    return global_batch // self.process_count

  def _read(
      self, split: str, shuffle_seed: int | None = None
  ) -> tf.data.Dataset:
    """This process's part of `split`, images still encoded; files in a
    seeded order when `shuffle_seed` is given, else in stored order."""
    split = tfds.split_for_jax_process(
        split,
        process_index=self.process_index,
        process_count=self.process_count,
    )
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed, try_autocache=False
    )
    ds = self._builder.as_dataset(
        split=split,
        shuffle_files=shuffle_seed is not None,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=read_config,
    )
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def create_dataset(config: ml_collections.ConfigDict) -> TfdsDataset:
  """The tfds dataset `config.data.name` names (a key of SPECS), read from
  `config.data.data_dir` ('': tfds's default, $TFDS_DATA_DIR or
  ~/tensorflow_datasets). TF, used only for input, is kept off the
  accelerators first.
  """
  hide_accelerators_from_tf()
  return TfdsDataset(
      config.data.name,
      batch_size=config.train.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
      image_size=config.data.image_size,
      data_dir=os.path.expanduser(config.data.data_dir) or None,
  )


def hide_accelerators_from_tf() -> None:
  """Keeps TF (used only for input) off GPUs and TPUs, which belong to JAX.

  Imports TF: call it only where a TF pipeline is about to be built.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    # TF already initialised, or no such device kind
    except (
        RuntimeError,
        ValueError,
    ):
      pass
