r"""Robustness to FGSM attacks, with and without JPEG compression as a defence.

  python -m experiments.fgsm --workdirs=GATED,PLAIN [--epsilons=0,0.01,0.03,0.1] \
      [--jpeg_quality=75] [--out=experiments/results]

Pixel scale: epsilon is on the [0, 1] scale of the raw pixels (digits: the
0..16 intensities divided by 16), not on the standardised scale the model
reads; 0.1 moves every pixel by a tenth of the full range (1.6 of the 16
intensity levels). Attack (white box, untargeted, one step):
x_adv = clip(x + epsilon * sign(d loss / d x), 0, 1), with the cross-entropy
of the true label and deterministic gates (their gradient is the
straight-through one of training). The JPEG defence, unknown to the attack,
encodes and decodes each adversarial image on the [0, 1] scale (8 bits, PIL,
--jpeg_quality) before the model sees it.

Flipped gates: for gated runs, the fraction of (image, gated block)
decisions that differ from those on the same defence's clean input (blocks
that always run are left out).

Writes `fgsm.png` (accuracy and flipped gates against epsilon) and
`fgsm.csv/.md` (one row per run, defence and epsilon).
"""

import io
import sys

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from adanet_jax.infer import inference
from experiments import common

FLAGS = common.new_flags(predicts=True, gate_mode=False)
flags.DEFINE_list(
    'epsilons',
    ['0', '0.01', '0.03', '0.1'],
    'Attack strengths on the [0, 1] pixel scale.',
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    'jpeg_quality', 75, 'JPEG quality of the defence (1-95).', flag_values=FLAGS
)

DEFENCES = ('none', 'jpeg')


def pixel_range(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per channel, the model-input values of pixel intensity 0 and 1.

  The pipeline standardises [0, 1] pixels, so over a whole split (which
  holds black and white pixels in every channel) the smallest and largest
  values are the images of 0 and 1.
  """
  return images.min(axis=(0, 1, 2)), images.max(axis=(0, 1, 2))


def jpeg(images: np.ndarray, lo, hi, quality: int) -> np.ndarray:
  """JPEG-compresses model inputs on the [0, 1] pixel scale (8 bits)."""
  unit = np.clip((images - lo) / (hi - lo), 0, 1)
  out = np.empty_like(unit)
  for i, image in enumerate(np.round(unit * 255).astype(np.uint8)):
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
        buffer, format='JPEG', quality=quality
    )
    decoded = np.asarray(Image.open(buffer), np.float32) / 255
    out[i] = decoded.reshape(image.shape)
  return (out * (hi - lo) + lo).astype(np.float32)


def gradient_sign(
    loaded: inference.LoadedModel, images, labels, batch_size
) -> np.ndarray:
  """sign(d cross-entropy / d image), per image, with deterministic gates.

  The sign is the same on the [0, 1] and the standardised scale (a positive
  factor apart).
  """

  def loss(x, y):
    logits, _ = loaded.model.apply(
        loaded.variables, x, train=False, gate_mode='deterministic'
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

  grad = jax.jit(jax.grad(loss))
  return inference.map_batches(
      lambda _, x, y: jnp.sign(grad(x, y)), batch_size, images, labels
  )


def attack_rows(
    loaded: inference.LoadedModel,
    name: str,
    epsilons,
    quality: int,
    batch_size: int,
) -> list[dict]:
  """Accuracy, flipped gates and compute per defence and epsilon of one run."""
  images, labels = loaded.eval_split()
  lo, hi = pixel_range(images)
  sign = gradient_sign(loaded, images, labels, batch_size)
  defend = {'none': lambda x: x, 'jpeg': lambda x: jpeg(x, lo, hi, quality)}
  gated = list(inference.gated_blocks(loaded.config))
  rows = []
  for defence in DEFENCES:
    clean = loaded.predict(defend[defence](images), batch_size=batch_size)
    for eps in epsilons:
      # Standardised scale: eps on [0, 1] is eps * (hi - lo); eps = 0 is exact.
      adversarial = np.clip(images + eps * (hi - lo) * sign, lo, hi)
      out = loaded.predict(defend[defence](adversarial), batch_size=batch_size)
      flips = out.executed[:, gated] != clean.executed[:, gated]
      rows.append(
          {
              'run': name,
              'gated': loaded.config.model.gated,
              'defence': defence,
              'epsilon': eps,
              'accuracy': float(np.mean(out.labels == labels)),
              'flipped_gates': float(flips.mean()) if gated else None,
              'blocks_executed': float(out.executed.sum(axis=1).mean()),
              'gflops_per_image': 2 * float(out.macs.mean()) / 1e9,
          }
      )
  return rows


def plot(rows: list[dict], quality: int):
  """Accuracy (left) and flipped gate decisions (right) against epsilon."""
  fig, axes = common.new_figure(1, 2, size=(5.5, 4.2))
  styles = {'none': ('-', 'no defence'), 'jpeg': ('--', f'JPEG q={quality}')}
  runs = list(dict.fromkeys(r['run'] for r in rows))
  for color, name in zip(
      ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple'), runs
  ):
    for defence, (ls, label) in styles.items():
      group = [r for r in rows if r['run'] == name and r['defence'] == defence]
      eps = [r['epsilon'] for r in group]
      axes[0, 0].plot(
          eps,
          [100 * r['accuracy'] for r in group],
          ls,
          color=color,
          marker='o',
          label=f'{name}, {label}',
      )
      if group[0]['flipped_gates'] is not None:
        axes[0, 1].plot(
            eps,
            [100 * r['flipped_gates'] for r in group],
            ls,
            color=color,
            marker='o',
            label=f'{name}, {label}',
        )
  xlabel = 'FGSM epsilon (pixel scale [0, 1])'
  axes[0, 0].set(
      title='Test accuracy under FGSM (deterministic gates)',
      xlabel=xlabel,
      ylabel='accuracy (%)',
  )
  axes[0, 1].set(
      title='Gate decisions flipped by the attack',
      xlabel=xlabel,
      ylabel='flipped decisions (% of image x gated block)',
  )
  for ax in axes[0]:
    if ax.lines:
      ax.legend(fontsize='small')
  return fig


def run(
    workdirs: list[str],
    out: str,
    epsilons=(0.0, 0.01, 0.03, 0.1),
    jpeg_quality: int = 75,
    batch_size: int | None = None,
) -> dict:
  """Attacks every run; writes the figure and table; returns their paths."""
  rows = []
  for workdir in workdirs:
    loaded = inference.load(workdir)
    rows += attack_rows(
        loaded,
        common.run_name(workdir),
        [float(e) for e in epsilons],
        jpeg_quality,
        batch_size or loaded.config.eval.batch_size,
    )
  return common.write_outputs(rows, plot(rows, jpeg_quality), out, 'fgsm')


def main(argv):
  fv = common.parse(FLAGS, argv, __doc__)
  print(
      run(
          fv.workdirs,
          fv.out,
          fv.epsilons,
          fv.jpeg_quality,
          fv.batch_size or None,
      )
  )


if __name__ == '__main__':
  main(sys.argv)
