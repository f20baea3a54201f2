"""A tiny TFDS catalog builder registered as `lm1b_standin`: it prepares the way TFDS's lm1b
does (its files found with `tf.io.gfile.glob` through TFDS's lazy TensorFlow import), from text
files in `$LM1B_STANDIN_DIR`, so a test can see what preparing lm1b does with and without
TensorFlow installed, offline."""

import os

import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils.lazy_imports_utils import tensorflow as tf


class Lm1bStandin(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.1.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    root = os.environ["LM1B_STANDIN_DIR"]
    return {split: self._generate_examples(tf.io.gfile.glob(os.path.join(root, f"{split}-*")))
            for split in ("train", "test")}

  def _generate_examples(self, files):
    for path in files:
      with open(path) as f:
        for i, line in enumerate(f):
          yield f"{os.path.basename(path)}_{i}", {"text": line.strip()}
