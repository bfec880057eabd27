"""Datasets: the interface, digits, tfds pipelines, augmentation, batching."""
