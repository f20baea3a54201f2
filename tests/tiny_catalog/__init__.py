"""A tiny TFDS builder registered exactly as catalog datasets are (by subclassing), to test the
`tfds:NAME` path offline."""

import tensorflow_datasets as tfds

TRAIN = [f"train document number {i}: the quick brown fox." for i in range(12)]
TEST = [f"test document number {i}: jumps over the lazy dog." for i in range(5)]


class DlmTinyCatalog(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"sentence": tfds.features.Text()})
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(TRAIN), "test": self._generate_examples(TEST)}

  def _generate_examples(self, texts):
    for i, text in enumerate(texts):
      yield i, {"sentence": text}
