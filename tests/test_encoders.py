"""The frozen BERT encoder against golden outputs of Hugging Face transformers (all-MiniLM-L6-v2).

tests/data/minilm_reference.json was produced with torch + transformers in a throwaway venv
(its "recipe" and "produced_with" fields say how); these tests need neither.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_bert import write as write_tiny_bert

from dlm.errors import DlmError
from dlm.models import encoders

GOLDEN = pathlib.Path(__file__).parent / "data" / "minilm_reference.json"
ATOL = 1e-4

TINY = encoders.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=16,
                           max_position_embeddings=12, type_vocab_size=2)


@pytest.fixture(scope="module")
def golden():
  return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def minilm():
  model_dir = encoders.default_model_dir()
  encoder, info = encoders.load_encoder(model_dir)
  return encoder, info, encoders.load_tokenizer(info.tokenizer_path)


@pytest.fixture(scope="module")
def golden_batch(golden):
  """The reference's padded batch of token ids: (input_ids, attention_mask)."""
  ids = golden["token_ids"]
  return encoders.pad_batch(ids, len(ids), max(len(s) for s in ids))


@pytest.fixture(scope="module")
def hidden(minilm, golden_batch):
  encoder = minilm[0]
  graphdef, state = nnx.split(encoder)
  forward = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))
  return np.asarray(forward(state, *golden_batch))


@pytest.fixture(scope="module")
def embeddings(minilm, golden):
  encoder, _, tokenizer = minilm
  return encoders.sentence_embeddings(encoder, tokenizer, golden["texts"],
                                      max_length=golden["max_length"], batch_size=8)


def test_default_model_is_minilm(minilm):
  encoder, info, tokenizer = minilm
  c = info.config
  assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (6, 384, 12)
  assert info.max_seq_length == 256
  assert tokenizer.get_vocab_size() == c.vocab_size
  assert set(info.unused_weights) <= {"embeddings.position_ids", "pooler.dense.weight",
                                      "pooler.dense.bias"}
  assert not nnx.state(encoder, nnx.Param)  # frozen: nothing an optimizer would train


def test_tokenization_matches_reference(minilm, golden):
  ids = encoders.tokenize(minilm[2], golden["texts"], golden["max_length"])
  assert ids == golden["token_ids"]
  assert len(ids[-1]) == golden["max_length"]  # the long text was truncated, [SEP] kept
  assert ids[-1][0] == 101 and ids[-1][-1] == 102
  assert minilm[2].padding is not None  # the caller's tokenizer was not reconfigured


def test_last_hidden_state_matches_transformers(hidden, golden, golden_batch):
  assert hidden.dtype == np.float32 and hidden.shape == (*golden_batch[0].shape, 384)
  for sample in golden["hidden_samples"]:
    got = hidden[sample["text"], sample["position"], :len(sample["values"])]
    np.testing.assert_allclose(got, sample["values"], atol=ATOL, rtol=0)


def test_sentence_embeddings_match_transformers(embeddings, hidden, golden, golden_batch):
  dims = golden["embedding_dims"]
  assert embeddings.shape == (len(golden["texts"]), 384) and embeddings.dtype == np.float32
  np.testing.assert_allclose(embeddings[:, :dims], golden["embeddings_head"], atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
  for i, j, cosine in golden["cosine_pairs"]:
    assert abs(float(embeddings[i] @ embeddings[j]) - cosine) < ATOL, (i, j)
  pooled = np.asarray(encoders.mean_pool(jnp.asarray(hidden), jnp.asarray(golden_batch[1])))
  np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), golden["pooled_norms"], atol=ATOL)


def test_paraphrase_is_closer_than_unrelated(embeddings):
  # 0 "A man is playing a guitar." / 1 "Someone is strumming a guitar." / 2 stock market.
  paraphrase = embeddings[0] @ embeddings[1]
  assert paraphrase > embeddings[0] @ embeddings[2] + 0.3
  assert paraphrase > embeddings[1] @ embeddings[2] + 0.3


def test_batching_and_padding_do_not_change_embeddings(minilm, embeddings, golden):
  encoder, _, tokenizer = minilm
  short = encoders.sentence_embeddings(encoder, tokenizer, golden["texts"][:4], batch_size=3)
  np.testing.assert_allclose(short, embeddings[:4], atol=1e-5)
  assert encoders.sentence_embeddings(encoder, tokenizer, []).shape == (0, 384)


def _tiny_checkpoint(tmp_path, prefix="", drop=None, reshape=None) -> pathlib.Path:
  return write_tiny_bert(tmp_path, TINY, prefix, drop, reshape)


def test_loads_bert_prefixed_checkpoint_with_transposed_kernels(tmp_path):
  model_dir = _tiny_checkpoint(tmp_path, prefix="bert.")
  encoder, info = encoders.load_encoder(model_dir)
  raw = encoders.read_safetensors(info.weights_path)
  np.testing.assert_array_equal(encoder.layers[1].intermediate.kernel[...],
                                raw["bert.encoder.layer.1.intermediate.dense.weight"].T)
  np.testing.assert_array_equal(encoder.embeddings.word[...],
                                raw["bert.embeddings.word_embeddings.weight"])
  assert info.unused_weights == ()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  encoder, _ = encoders.load_encoder(_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))
  return nnx.split(encoder)


def test_weights_are_frozen(tiny):
  graphdef, state = tiny
  ids, mask = jnp.array([[1, 5, 7, 0]]), jnp.array([[1, 1, 1, 0]])
  loss = lambda s: jnp.sum(nnx.merge(graphdef, s)(ids, mask) ** 2)  # noqa: E731
  grads = jax.jit(jax.grad(loss))(state)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


def test_padding_is_masked_and_all_layers_returned(tiny):
  graphdef, state = tiny

  @jax.jit
  def forward(ids, mask):
    encoder = nnx.merge(graphdef, state)
    return encoder.all_hidden_states(ids, mask), encoder(ids, mask)

  states, last = forward(jnp.array([[1, 5, 7, 0, 0], [1, 5, 7, 9, 3]]),
                         jnp.array([[1, 1, 1, 0, 0]] * 2))
  assert len(states) == TINY.num_hidden_layers + 1
  np.testing.assert_array_equal(states[-1], last)
  np.testing.assert_allclose(last[0, :3], last[1, :3], atol=1e-6)  # padding ids are unseen


def test_missing_directory_is_a_clear_error(tmp_path):
  with pytest.raises(DlmError, match="encoder directory not found"):
    encoders.load_encoder(tmp_path / "nope")


def test_missing_file_is_a_clear_error(tmp_path):
  model_dir = _tiny_checkpoint(tmp_path)
  (model_dir / encoders.WEIGHTS_FILE).unlink()
  with pytest.raises(DlmError, match=r"encoder file not found: .*model\.safetensors"):
    encoders.load_encoder(model_dir)


def test_missing_weight_is_a_clear_error(tmp_path):
  name = "encoder.layer.1.attention.self.key.weight"
  with pytest.raises(DlmError, match=rf"model\.safetensors: missing weight '{name}'"):
    encoders.load_encoder(_tiny_checkpoint(tmp_path, drop=name))


def test_shape_mismatch_is_a_clear_error(tmp_path):
  name = "encoder.layer.0.output.LayerNorm.bias"
  with pytest.raises(DlmError, match=rf"weight '{name}' has shape \(3,\), expected \(8,\)"):
    encoders.load_encoder(_tiny_checkpoint(tmp_path, reshape=name))
