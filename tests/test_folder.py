"""Tests of `adanet_jax.data.folder`: classes and splits fixed by the file
names, train/ and test/ honoured, resizing and conversion, one line per bad
file or folder (before the workdir exists), and a resumed run on a folder
that ends bit for bit where an uninterrupted one does."""

import os

from conftest import Interrupted, StopAt, restore_state, snapshot
import jax
import numpy as np
from PIL import Image
import pytest

from adanet_jax.data import folder, input_pipeline
from adanet_jax.errors import ConfigError, DataError
from adanet_jax.train import trainer

COLOURS = {'blue': (0, 0, 255), 'green': (0, 255, 0), 'red': (255, 0, 0)}


def make_folder(root, per_class=12, classes=tuple(COLOURS)):
  """`per_class` 10 x 12 images per class, PNG and JPEG in turn, each its
  class's colour with noise."""
  for name in classes:
    os.makedirs(root / name)
    for i in range(per_class):
      noise = np.random.default_rng(i).integers(0, 60, (12, 10, 3))
      pixels = np.array(COLOURS.get(name, (128, 128, 128))) * 0.75 + noise
      image = Image.fromarray(pixels.astype(np.uint8))
      image.save(root / name / f'{i:02d}.{("png", "jpg")[i % 2]}')
  return root


# What the SHA-256 of each path holds out at data.eval_fraction = 0.2.
HELD_OUT = (
    ('blue/04.png', 0),
    ('blue/05.jpg', 0),
    ('blue/06.png', 0),
    ('blue/10.png', 0),
    ('green/10.png', 1),
    ('red/00.png', 2),
    ('red/04.png', 2),
)


def test_classes_and_split_are_fixed_by_the_file_names(tmp_path):
  root = make_folder(tmp_path / 'photos')
  listing = folder.list_folder(str(root), 0.2)
  assert listing.class_names == ('blue', 'green', 'red')
  assert listing.eval == HELD_OUT
  everything = tuple(
      (f'{c}/{i:02d}.{("png", "jpg")[i % 2]}', label)
      for label, c in enumerate(COLOURS)
      for i in range(12)
  )
  assert listing.train == tuple(x for x in everything if x not in HELD_OUT)
  # New files move no other file between the splits.
  for i in range(12, 40):
    Image.new('RGB', (10, 12)).save(root / 'red' / f'{i}.png')
  grown = folder.list_folder(str(root), 0.2)
  assert tuple(x for x in grown.eval if x in everything) == HELD_OUT
  assert set(listing.train) < set(grown.train)
  assert len(grown.eval) == 16  # of 64
  few = make_folder(tmp_path / 'few', per_class=1, classes=('blue', 'green'))
  with pytest.raises(DataError) as refused:
    folder.list_folder(str(few), 0.2)
  assert str(refused.value) == (
      f'{few}: no image falls in the evaluation split (of 2, '
      'data.eval_fraction=0.2); add images or change data.eval_fraction'
  )


def test_train_and_test_subfolders_are_honoured(tmp_path):
  root = tmp_path / 'photos'
  make_folder(root / 'train', per_class=2, classes=('cat', 'dog'))
  make_folder(root / 'test', per_class=1, classes=('cat', 'dog'))
  listing = folder.list_folder(str(root), 0.2)
  assert listing == folder.Listing(
      ('cat', 'dog'),
      (
          ('train/cat/00.png', 0),
          ('train/cat/01.jpg', 0),
          ('train/dog/00.png', 1),
          ('train/dog/01.jpg', 1),
      ),
      (('test/cat/00.png', 0), ('test/dog/00.png', 1)),
  )
  make_folder(root / 'test', per_class=1, classes=('eel',))
  with pytest.raises(DataError) as refused:
    folder.list_folder(str(root), 0.2)
  assert str(refused.value) == (
      f'{root}/test has the class folders cat, dog, eel but {root}/train has '
      'cat, dog: both must hold the same classes'
  )
  os.makedirs(root / 'val')
  with pytest.raises(DataError) as refused:
    folder.list_folder(str(root), 0.2)
  assert str(refused.value) == (
      f'{root} holds train/ and test/ beside other folders (val): move them '
      'out, or into train/ or test/'
  )


def test_images_are_centre_cropped_and_converted_to_rgb(tmp_path):
  # 30 x 10 grayscale: the centre square is the middle third, 200
  gray = np.zeros((10, 30), np.uint8)
  gray[:, 10:20] = 200
  Image.fromarray(gray).save(tmp_path / 'gray.png')
  np.testing.assert_array_equal(
      folder.read_image(str(tmp_path / 'gray.png'), 10),
      np.full((10, 10, 3), 200, np.uint8),
  )
  rgba = np.zeros((4, 4, 4), np.uint8) + np.array([10, 20, 30, 0], np.uint8)
  Image.fromarray(rgba).save(tmp_path / 'rgba.png')  # alpha is dropped
  np.testing.assert_array_equal(
      folder.read_image(str(tmp_path / 'rgba.png'), 4), rgba[..., :3]
  )


def _damage(root, case):
  """Damages the folder `root` as `case` says; returns the message."""
  path = root / 'red' / 'bad.png'
  if case == 'corrupt':
    data = (root / 'red' / '00.png').read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return f'{path} is not a readable image (image file is truncated)'
  if case == 'not an image':
    path.write_text('not an image')
    return (
        f'{path} is not a readable image (Pillow cannot identify it); '
        'allowed: JPEG, PNG'
    )
  if case == 'empty file':
    path.write_bytes(b'')
    return f'{path} is empty (0 bytes), not an image'
  if case == '16-bit':
    Image.fromarray(np.full((4, 4), 60000, np.uint16)).save(path)
    return (
        f'{path} has I;16 pixels (Pillow mode), not 8 bits per channel: '
        'convert it to 8-bit RGB'
    )
  if case == 'gif':
    Image.new('RGB', (4, 4)).save(path, format='GIF')
    return f'{path} is a GIF image; allowed: JPEG, PNG'
  if case == 'empty class folder':
    os.makedirs(root / 'white')
    return f'class folder {root}/white holds no images'
  os.makedirs(root / 'red' / 'more')  # 'folder in a class folder'
  return (
      f'{root}/red/more is a folder inside the class folder {root}/red: '
      'images must sit directly in their class folder'
  )


@pytest.mark.parametrize(
    'case',
    [
        'corrupt',
        'not an image',
        'empty file',
        '16-bit',
        'gif',
        'empty class folder',
        'folder in a class folder',
    ],
)
def test_a_bad_file_or_folder_is_one_line_naming_it(
    load_config, tmp_path, case
):
  root = make_folder(tmp_path / 'photos', per_class=2)
  config = load_config('folder.py', f'dir={root},image_size=8,depth=8')
  config.train.batch_size = config.eval.batch_size = 1
  message = _damage(root, case)
  with pytest.raises(DataError) as refused:
    input_pipeline.create_dataset(config)
  assert str(refused.value) == message


def test_a_missing_or_empty_folder_is_refused_when_the_config_loads(
    load_config, tmp_path
):
  (tmp_path / 'a.png').write_bytes(b'')
  for arg, message in (
      (
          f'dir={tmp_path}/a.png',
          f"data.data_dir='{tmp_path}/a.png' is a file, not a folder of "
          'class subfolders',
      ),
      (
          f'dir={tmp_path}/none',
          f"data.data_dir='{tmp_path}/none' does not exist: give a folder of "
          'class subfolders (configs/folder.py:dir=PATH)',
      ),
      (
          f'dir={tmp_path}',
          f'{tmp_path} holds no class folders: put the images of each class '
          f'in a subfolder named after it ({tmp_path}/<class>/<image>)',
      ),
      (
          'image_size=8',
          'configs/folder.py needs the argument dir=PATH, a folder of class '
          'subfolders: --config=configs/folder.py:dir=PATH[,image_size=S]',
      ),
  ):
    with pytest.raises(ConfigError) as refused:
      load_config('folder.py', arg)
    assert str(refused.value) == message


def _tiny_config(load_config, root):
  """Depth 8 on 8 x 8 images, batches of 8 (3 steps per epoch of 29
  training images), 2 epochs, a checkpoint every 2 steps."""
  config = load_config('folder.py', f'dir={root},image_size=8,depth=8,epochs=2')
  config.train.batch_size = config.eval.batch_size = 8
  config.train.sync_every_steps = 1  # block on every step (multi-device CPU)
  config.train.log_every_steps = 2
  config.train.eval_every_epochs = 0.0
  config.checkpoint.every_steps = 2
  return config


@pytest.mark.timeout(300)
def test_resumed_run_equals_uninterrupted_run(load_config, tmp_path):
  root = make_folder(tmp_path / 'photos')
  config = _tiny_config(load_config, root)
  # A damaged image is refused before the workdir is created.
  (root / 'red' / 'bad.png').write_bytes(b'')
  before = snapshot(tmp_path)
  with pytest.raises(DataError):
    trainer.train_and_evaluate(config, str(tmp_path / 'refused'))
  assert snapshot(tmp_path) == before
  (root / 'red' / 'bad.png').unlink()

  dataset = input_pipeline.create_dataset(config)
  assert (dataset.num_train, dataset.num_eval, dataset.steps_per_epoch) == (
      29,
      7,
      3,
  )
  plain = folder.preprocess([str(root / p) for p in dataset.train_files], 8)
  batch = dataset.train_batch(0)
  assert batch['image'].shape == (8, 8, 8, 3)
  assert batch['image'].dtype == np.float32
  order = np.random.default_rng([config.seed, 0]).permutation(29)[:8]
  np.testing.assert_array_equal(batch['label'], dataset.train_labels[order])
  assert not np.array_equal(batch['image'], plain[order])  # augmented

  trainer.train_and_evaluate(config, str(tmp_path / 'straight'), dataset)
  with pytest.raises(Interrupted):
    trainer.train_and_evaluate(
        config, str(tmp_path / 'resumed'), StopAt(dataset, 3)
    )
  assert restore_state(config, tmp_path / 'resumed')[0] == 2
  # The restarted process reads the folder again.
  final = trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert final['eval/deterministic/count'] == 7  # 8 with one padded
  (step_a, a), (step_b, b) = (
      restore_state(config, tmp_path / n) for n in ('straight', 'resumed')
  )
  assert step_a == step_b == 6
  for part in ('params', 'batch_stats', 'opt_state'):
    for x, y in zip(
        jax.tree.leaves(getattr(a, part)), jax.tree.leaves(getattr(b, part))
    ):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), part)
