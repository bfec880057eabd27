"""Your own images: a gated CIFAR-style ResNet on a folder of class subfolders
(`DIR/<class>/<image>.jpg`, or `DIR/train/<class>/...` and
`DIR/test/<class>/...`), JPEG or PNG, read into memory once
(`adanet_jax/data/folder.py`: the split, resizing, normalisation and
augmentation):

  python -m adanet_jax.main --config=configs/folder.py:dir=~/photos,image_size=32 \
      --workdir=workdirs/photos

Argument string: dir (the folder; required), image_size (S: the centre
square resized to S x S, default 32), and as configs/digits.py, whose recipe
this is (SGD at 0.1 per 128 images, cosine schedule, batch 128): depth
(6n+2, default 20), gated (default true), target (default 0.6), epochs
(default 100).

The config lists the class folders when it is loaded and sets
`model.num_classes` from them (the classes are their sorted names); the
dataset refuses a folder whose class count differs from the model's (an
override of `data.data_dir` to another folder). Without train/ and test/,
`data.eval_fraction` (default 0.2) of the images, chosen by a hash of their
path, is held out.

Hardware and time: a CPU does for small folders at small image sizes (the
cost of a step grows with image_size squared); larger ones want an
accelerator. A folder of a few hundred images wants a smaller
`--config.train.batch_size` (at most the training images) and a checkpoint
every few epochs.
"""

import os

from adanet_jax import config_lib
from adanet_jax.data import folder
from adanet_jax.errors import ConfigError


def get_config(arg=None):
  args = config_lib.parse_arg(
      arg,
      dir='',
      image_size=32,
      depth=20,
      gated=True,
      target=0.6,
      epochs=100.0,
  )
  if not args.dir:
    raise ConfigError(
        'configs/folder.py needs the argument dir=PATH, a folder of class '
        'subfolders: --config=configs/folder.py:dir=PATH[,image_size=S]'
    )
  # the digits recipe: model, loss, optimizer, schedule
  config = config_lib.load_config(
      os.path.join(os.path.dirname(__file__), 'digits.py')
      + f':depth={args.depth},gated={args.gated},target={args.target},'
      f'epochs={args.epochs}'
  )
  config.model.num_classes = len(folder.class_names(args.dir))
  config.data.name = 'folder'
  config.data.data_dir = args.dir
  config.data.image_size = args.image_size
  config.data.channels = 3
  config.train.log_every_steps = 50
  config.checkpoint.every_steps = 500
  return config
