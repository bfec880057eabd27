"""Per-class x per-block execution rates on the test split (the paper's Fig. 4).

  python -m experiments.class_heatmap --workdirs=DIR[,DIR...] [--out=experiments/results]

Loads each run's latest checkpoint, predicts the test split with
--gate_mode gates and draws entry (k, l) = fraction of class-k test images
that execute block l. With deterministic gates this equals the
`eval/class_block_rates_deterministic_step<N>.csv` the trainer writes.

Writes per run `class_heatmap_<run>.png` and `class_heatmap_<run>.csv/.md`
(one row per class).
"""

import sys

import numpy as np

from adanet_jax.infer import inference
from experiments import common

FLAGS = common.new_flags(predicts=True)


def class_matrix(
    loaded: inference.LoadedModel,
    gate_mode: str = 'deterministic',
    batch_size: int | None = None,
) -> np.ndarray:
  """(classes, blocks) execution rates of the run's test split."""
  images, labels = loaded.eval_split()
  prediction = loaded.predict(images, gate_mode, batch_size)
  return inference.class_block_rates(
      labels, prediction.executed, loaded.config.model.num_classes
  )


def plot_heatmap(matrix: np.ndarray, title: str, ax=None):
  """Draws the matrix on `ax` (a new figure if None); returns the figure."""
  if ax is None:
    _, axes = common.new_figure(
        size=(max(7.0, 2.5 + 0.3 * matrix.shape[1]), 5.0)
    )
    ax = axes[0, 0]
  image = ax.imshow(matrix, vmin=0, vmax=1, cmap='viridis', aspect='auto')
  ax.set(
      title=title,
      xlabel='residual block',
      ylabel='class',
      xticks=range(matrix.shape[1]),
      yticks=range(matrix.shape[0]),
  )
  ax.tick_params(axis='x', labelsize='small')
  ax.figure.colorbar(
      image, ax=ax, label="fraction of the class's images executing the block"
  )
  return ax.figure


def run(
    workdirs: list[str],
    out: str,
    gate_mode: str = 'deterministic',
    batch_size: int | None = None,
) -> dict:
  """Writes a heatmap and a table per run; returns {run: {'png', 'csv', 'md'}}."""
  paths = {}
  for workdir in workdirs:
    name = common.run_name(workdir)
    matrix = class_matrix(inference.load(workdir), gate_mode, batch_size)
    rows = [
        {'class': k, **{f'block{b:02d}': float(v) for b, v in enumerate(row)}}
        for k, row in enumerate(matrix)
    ]
    title = f'{name}: execution rate per class and block\n({gate_mode} gates, test split)'
    paths[name] = common.write_outputs(
        rows, plot_heatmap(matrix, title), out, f'class_heatmap_{name}'
    )
  return paths


def main(argv):
  fv = common.parse(FLAGS, argv, __doc__)
  print(run(fv.workdirs, fv.out, fv.gate_mode, fv.batch_size or None))


if __name__ == '__main__':
  main(sys.argv)
