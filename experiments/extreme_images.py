r"""The test images that execute the fewest and the most residual blocks.

  python -m experiments.extreme_images --workdirs=DIR[,DIR...] [--num_images=8] \
      [--out=experiments/results]

Loads each run's latest checkpoint and predicts the test split with
--gate_mode gates. Images are ranked by blocks executed, ties broken by
their gates' summed execution probability (the paper reports that harder
images use more blocks).

Writes per run `extreme_images_<run>.png` (top row: fewest blocks, bottom
row: most; titles give label, prediction and blocks) and
`extreme_images_<run>.csv/.md`.
"""

import sys

from absl import flags
import numpy as np

from adanet_jax.infer import inference
from experiments import common

FLAGS = common.new_flags(predicts=True)
flags.DEFINE_integer(
    'num_images', 8, 'Images in each of the two groups.', flag_values=FLAGS
)


def extremes(prediction: inference.Prediction, k: int) -> dict[str, np.ndarray]:
  """Indices of the `k` images with the fewest and the `k` with the most blocks."""
  blocks = prediction.executed.sum(axis=1)
  # by blocks, then probability
  order = np.lexsort((prediction.probs.sum(axis=1), blocks))
  return {'fewest': order[:k], 'most': order[::-1][:k]}


def table_rows(name: str, groups: dict, prediction, labels) -> list[dict]:
  """One row per shown image."""
  blocks = prediction.executed.sum(axis=1)
  return [
      {
          'run': name,
          'group': group,
          'rank': rank,
          'test_index': int(i),
          'label': int(labels[i]),
          'predicted': int(prediction.labels[i]),
          'blocks_executed': int(blocks[i]),
          'macs': float(prediction.macs[i]),
      }
      for group, ids in groups.items()
      for rank, i in enumerate(ids)
  ]


def plot(name: str, groups: dict, images, prediction, labels, gate_mode: str):
  """Two rows of images: the fewest and the most blocks."""
  k = max(len(ids) for ids in groups.values())
  fig, axes = common.new_figure(2, k, size=(1.3, 1.6))
  # one grey scale for all images
  lo, hi = float(images.min()), float(images.max())
  blocks = prediction.executed.sum(axis=1)
  for row, (group, ids) in enumerate(groups.items()):
    for col, ax in enumerate(axes[row]):
      ax.set_axis_off()
      if col >= len(ids):
        continue
      i = ids[col]
      ax.imshow(images[i].mean(axis=-1), cmap='gray_r', vmin=lo, vmax=hi)
      ax.set_title(
          f'{labels[i]}->{prediction.labels[i]}, {blocks[i]} blk',
          fontsize='small',
      )
    axes[row, 0].text(
        -0.3,
        0.5,
        f'{group}\nblocks',
        transform=axes[row, 0].transAxes,
        ha='right',
        va='center',
    )
  fig.suptitle(
      f'{name}: test images executing the fewest (top) and the most (bottom) of '
      f'{prediction.executed.shape[1]} blocks\n({gate_mode} gates; each title: '
      'label->prediction, blocks executed)'
  )
  return fig


def run(
    workdirs: list[str],
    out: str,
    num_images: int = 8,
    gate_mode: str = 'deterministic',
    batch_size: int | None = None,
) -> dict:
  """Writes an image grid and a table per run; returns {run: {'png', 'csv', 'md'}}."""
  paths = {}
  for workdir in workdirs:
    name = common.run_name(workdir)
    loaded = inference.load(workdir)
    images, labels = loaded.eval_split()
    prediction = loaded.predict(images, gate_mode, batch_size)
    groups = extremes(prediction, num_images)
    paths[name] = common.write_outputs(
        table_rows(name, groups, prediction, labels),
        plot(name, groups, images, prediction, labels, gate_mode),
        out,
        f'extreme_images_{name}',
    )
  return paths


def main(argv):
  fv = common.parse(FLAGS, argv, __doc__)
  print(
      run(
          fv.workdirs,
          fv.out,
          fv.num_images,
          fv.gate_mode,
          fv.batch_size or None,
      )
  )


if __name__ == '__main__':
  main(sys.argv)
