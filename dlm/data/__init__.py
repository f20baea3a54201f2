"""Data: corpora as TFDS datasets, tokenizers, and the grain input pipeline."""
