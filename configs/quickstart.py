"""Quickstart: the embedded stdlib prose corpus with a BPE of 8192 tokens.

  python -m dlm.data --config=configs/quickstart.py
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 256
  config.data.tokenizer.vocab_size = 8192
  config.train.batch_size = 32
  return config
