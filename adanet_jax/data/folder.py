"""`folder`: your own images, a folder of class subfolders (the layout of
torchvision's and tfds' ImageFolder), read into memory once: for folders
that fit in memory (ImageNet-scale data belongs to tfds).

Layout: `DIR/<class>/<image>`, or `DIR/train/<class>/<image>` and
`DIR/test/<class>/<image>` (then train/ and test/ must hold the same class
folders and nothing else may sit beside them). The classes are the sorted
names of the class folders; label i is the i-th. Names starting with '.'
are skipped; files beside the class folders (a README) are not read; a
folder inside a class folder is refused.

Split: train/ and test/ when present; otherwise an image is held out for
evaluation when the SHA-256 of its path relative to DIR ('cat/001.jpg')
falls in the first `data.eval_fraction` of the hash range, so adding or
removing images moves no other image between the splits.

Images: JPEG or PNG (by content, not name) of 8 bits per channel; grayscale,
palette, CMYK and RGBA images are converted to RGB (alpha is dropped);
16-bit images are refused. The EXIF orientation is applied, then the centre
square is cropped and resized to `data.image_size` (Pillow's antialiased
bilinear: the shorter side resized and the centre cropped). Pixels are
normalised with ImageNet's fixed per-channel mean and standard deviation,
not statistics of the folder, so new images are preprocessed for `predict`
without anything of the run (`preprocess`).

Training order and augmentation: the digits dataset's order (a permutation
per (seed, epoch)) and CIFAR's augmentation (`augment.cifar_augment`: zero
padding of image_size / 8, random crop, flip half the time) seeded by the
example's position in the global stream, as the tfds pipelines do: a batch
is a function of (seed, step), so a resumed run sees the batches of an
uninterrupted one.

Every file is read and checked when the dataset is created, before the
workdir is: a file that cannot be used is one `DataError` naming it.
"""

import concurrent.futures
import dataclasses
import hashlib
import os

import jax
import ml_collections
import numpy as np
from PIL import Image, ImageOps

from adanet_jax.data import batches, digits
from adanet_jax.errors import DataError

FORMATS = ('JPEG', 'PNG')
# Pillow modes of 8 bits per channel, all converted to RGB.
EIGHT_BIT_MODES = ('1', 'L', 'LA', 'P', 'PA', 'RGB', 'RGBA', 'CMYK', 'YCbCr')
SPLIT_FOLDERS = ('train', 'test')
PAD_FRACTION = 8  # CIFAR: 4 pixels of padding on 32


@dataclasses.dataclass(frozen=True)
class Listing:
  """What a folder holds: class names and each split's (path, label) pairs,
  paths relative to the folder, in sorted order."""

  class_names: tuple[str, ...]
  train: tuple[tuple[str, int], ...]
  eval: tuple[tuple[str, int], ...]


def _visible(path: str) -> list[os.DirEntry]:
  return sorted(
      (e for e in os.scandir(path) if not e.name.startswith('.')),
      key=lambda e: e.name,
  )


def _check_root(root: str) -> None:
  if not os.path.exists(root):
    raise DataError(
        f'data.data_dir={root!r} does not exist: give a folder of class '
        'subfolders (configs/folder.py:dir=PATH)'
    )
  if not os.path.isdir(root):
    raise DataError(
        f'data.data_dir={root!r} is a file, not a folder of class subfolders'
    )


def _class_folders(path: str) -> list[str]:
  names = [e.name for e in _visible(path) if e.is_dir()]
  if not names:
    raise DataError(
        f'{path} holds no class folders: put the images of each class in a '
        f'subfolder named after it ({path}/<class>/<image>)'
    )
  return names


def _layout(root: str) -> tuple[tuple[str, ...], dict[str, str] | None]:
  """(class names, {'train': .., 'test': ..} or None without train/ and
  test/) of the folder `root`."""
  _check_root(root)
  names = [e.name for e in _visible(root) if e.is_dir()]
  if not set(SPLIT_FOLDERS) <= set(names):
    return tuple(_class_folders(root)), None
  others = sorted(set(names) - set(SPLIT_FOLDERS))
  if others:
    raise DataError(
        f'{root} holds train/ and test/ beside other folders '
        f'({", ".join(others)}): move them out, or into train/ or test/'
    )
  splits = {s: os.path.join(root, s) for s in SPLIT_FOLDERS}
  train, test = (_class_folders(splits[s]) for s in SPLIT_FOLDERS)
  if train != test:
    raise DataError(
        f'{splits["test"]} has the class folders {", ".join(test)} but '
        f'{splits["train"]} has {", ".join(train)}: both must hold the '
        'same classes'
    )
  return tuple(train), splits


def class_names(root: str) -> tuple[str, ...]:
  """The sorted class folder names of `root` (of `root/train` when it holds
  train/ and test/); reads no image.

  Raises:
    DataError: `root` is missing, a file, or holds no class folder.
  """
  return _layout(os.path.expanduser(root))[0]


def _images(root: str, classes) -> list[tuple[str, int]]:
  """(path relative to `root`, label) of every image of the class folders."""
  found = []
  for label, name in enumerate(classes):
    folder = os.path.join(root, name)
    entries = _visible(folder)
    for entry in entries:
      if entry.is_dir():
        raise DataError(
            f'{entry.path} is a folder inside the class folder {folder}: '
            'images must sit directly in their class folder'
        )
    if not entries:
      raise DataError(f'class folder {folder} holds no images')
    found += [(f'{name}/{e.name}', label) for e in entries]
  return found


def held_out(relative_path: str, eval_fraction: float) -> bool:
  """Whether the image at `relative_path` ('cat/001.jpg') is held out: a
  function of its own path, so other files do not move it."""
  digest = hashlib.sha256(relative_path.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') < eval_fraction * 2**64


def list_folder(root: str, eval_fraction: float) -> Listing:
  """The classes and splits of the folder `root` (see the module doc).

  Raises:
    DataError: naming the missing or empty folder, or a misplaced folder.
  """
  root = os.path.expanduser(root)
  classes, splits = _layout(root)
  if splits:
    prefix = {s: os.path.relpath(splits[s], root) + '/' for s in splits}
    train, test = (
        tuple((prefix[s] + p, y) for p, y in _images(splits[s], classes))
        for s in SPLIT_FOLDERS
    )
  else:
    found = _images(root, classes)
    train = tuple(x for x in found if not held_out(x[0], eval_fraction))
    test = tuple(x for x in found if held_out(x[0], eval_fraction))
  for split, items in (('training', train), ('evaluation', test)):
    if not items:
      raise DataError(
          f'{root}: no image falls in the {split} split (of '
          f'{len(train) + len(test)}, data.eval_fraction={eval_fraction}); '
          'add images or change data.eval_fraction'
      )
  return Listing(classes, train, test)


def read_image(path: str, image_size: int) -> np.ndarray:
  """The image file at `path` as (image_size, image_size, 3) uint8 RGB.

  Raises:
    DataError: the file is empty, not a JPEG or PNG image, damaged, or not
      of 8 bits per channel.
  """
  if os.path.getsize(path) == 0:
    raise DataError(f'{path} is empty (0 bytes), not an image')
  try:
    with Image.open(path) as image:
      if image.format not in FORMATS:
        raise DataError(
            f'{path} is a {image.format} image; allowed: {", ".join(FORMATS)}'
        )
      if image.mode not in EIGHT_BIT_MODES:
        raise DataError(
            f'{path} has {image.mode} pixels (Pillow mode), not 8 bits per '
            'channel: convert it to 8-bit RGB'
        )
      # JPEG: decode at a reduced scale no smaller than needed, much faster
      # for photos far larger than the image size
      image.draft('RGB', (image_size, image_size))
      image = ImageOps.exif_transpose(image).convert('RGB')
      image = ImageOps.fit(
          image, (image_size, image_size), Image.Resampling.BILINEAR
      )
      return np.asarray(image, np.uint8)
  except DataError:
    raise
  except Image.UnidentifiedImageError:
    raise DataError(
        f'{path} is not a readable image (Pillow cannot identify it); '
        f'allowed: {", ".join(FORMATS)}'
    ) from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f'{path} is not a readable image ({e})') from None


def read_images(paths, image_size: int) -> np.ndarray:
  """(N, image_size, image_size, 3) uint8 of the image files `paths`; a
  bad file is reported as the first bad one in `paths` order."""
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    images = list(pool.map(lambda p: read_image(p, image_size), paths))
  return (
      np.stack(images)
      if images
      else np.zeros((0, image_size, image_size, 3), np.uint8)
  )


def preprocess(paths, image_size: int) -> np.ndarray:
  """Image files as the model trained on a folder sees them in evaluation:
  float32 (N, image_size, image_size, 3), for `predict`."""
  return _normalize(read_images(paths, image_size))


def _normalize(images: np.ndarray) -> np.ndarray:
  from adanet_jax.data import augment  # pylint: disable=import-outside-toplevel

  return augment.normalize(
      images, augment.IMAGENET_MEAN, augment.IMAGENET_STD
  ).numpy()


@dataclasses.dataclass
class FolderDataset(digits.ArrayDataset):
  """A folder's images in memory: training images as uint8, augmented and
  normalised per batch; evaluation images normalised once."""

  class_names: tuple[str, ...] = ()
  train_files: tuple[str, ...] = ()  # relative to the folder, in label order
  eval_files: tuple[str, ...] = ()

  def __post_init__(self):
    super().__post_init__()
    self._augment = _batch_augmenter(
        self.seed, max(1, self.image_shape[0] // PAD_FRACTION)
    )

  def train_batch(self, step: int) -> dict:
    batch = super().train_batch(step)
    positions = batches.process_share(
        step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
    )
    return {**batch, 'image': self._augment(batch['image'], positions)}


def _batch_augmenter(seed: int, pad: int):
  """uint8 images and their positions in the global stream -> augmented,
  normalised float32 images (one compiled TF function for every batch)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from adanet_jax.data import augment  # pylint: disable=import-outside-toplevel

  def one(args):
    image, position = args
    image = augment.cifar_augment(
        image, augment.example_seed(seed, position), pad
    )
    return augment.normalize(image, augment.IMAGENET_MEAN, augment.IMAGENET_STD)

  @tf.function
  def run(images, positions):
    return tf.map_fn(one, (images, positions), fn_output_signature=tf.float32)

  return lambda images, positions: run(images, positions).numpy()


def load_folder(config: ml_collections.ConfigDict) -> FolderDataset:
  """The folder `config.data.data_dir`, every image read and checked.

  Raises:
    DataError: naming a missing or empty folder or a file that cannot be
      used; ConfigError: a batch larger than the training split.
  """
  from adanet_jax.data import tfds_pipeline  # pylint: disable=import-outside-toplevel

  root = os.path.expanduser(config.data.data_dir)
  listing = list_folder(root, config.data.eval_fraction)
  # before the images are read: a long read would end in a refusal
  batches.check_batch_sizes(
      config.train.batch_size,
      config.eval.batch_size,
      len(listing.train),
      jax.process_count(),
      'folder',
  )
  tfds_pipeline.hide_accelerators_from_tf()
  size = config.data.image_size
  train, test = (
      read_images([os.path.join(root, p) for p, _ in items], size)
      for items in (listing.train, listing.eval)
  )
  return FolderDataset(
      train,
      np.array([y for _, y in listing.train], np.int32),
      _normalize(test),
      np.array([y for _, y in listing.eval], np.int32),
      num_classes=len(listing.class_names),
      batch_size=config.train.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
      name='folder',
      class_names=listing.class_names,
      train_files=tuple(p for p, _ in listing.train),
      eval_files=tuple(p for p, _ in listing.eval),
  )
