"""lm-evaluation-harness model `dlm-jax`: a dlm workdir (trained here or converted) on the
harness's tasks, through its `LM` API (`lm_eval.api.model.LM`; the harness's base install needs
no torch).

  python -m dlm.lm_eval --model_args workdir=DIR[,sampler=low_confidence,steps=256,...] \\
      --tasks gsm8k [the harness's own flags]

(`--model dlm-jax` is implied.) Importing `dlm.lm_eval` registers the model for Python users:
`lm_eval.simple_evaluate(model="dlm-jax", model_args="workdir=DIR", tasks=[...])`.

Model arguments: `workdir`, `params` (`ema` or `params`), `mc_samples` and `mc_batch` (the
masked family's Monte Carlo likelihood: samples per request and per compiled call; LLaDA's
evaluation uses 128 and 32), `seed`, `new_tokens` (positions generated per request when a task
gives no `max_gen_toks`), `sampler` and any sampler option (`steps`, `block_length`,
`temperature`, `cache`, `threshold`, ...; `dlm.samplers.OPTIONS`). An unknown one is an error.

* `loglikelihood`: `dlm.likelihood.Scorer`: exact for the autoregressive family, the ELBO's
  Monte Carlo estimate for the masked family (as LLaDA's `eval_llada.py`); all of a task's
  requests are scored together, `mc_batch` rows per compiled call. The context and
  continuation are tokenized together and split where the context ends (trailing spaces of
  the context move to the continuation, as the harness's HF model does).
* `loglikelihood_rolling`: the whole text after the end-of-text token, in windows of the
  model's training length (the harness's `get_rolling_token_windows`): exact for the
  autoregressive family, a bound for the masked one.
* `generate_until`: `dlm.sample` on each context with `new_tokens` positions after it, the text
  cut at the first stop sequence of the request.
"""

from __future__ import annotations

import dataclasses

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from dlm import api, likelihood, samplers
from dlm.errors import DlmError

NAME = "dlm-jax"
OWN = ("workdir", "params", "mc_samples", "mc_batch", "seed", "new_tokens", "sampler")
# Set by the harness for every model; meaningless here (JAX places the work itself).
HARNESS = ("batch_size", "max_batch_size", "device")


def _typed(name: str, value):
  """A sampler option from the harness's model_args (strings, or numbers it already parsed)
  as its SamplerConfig field's type."""
  field = {f.name: f for f in dataclasses.fields(samplers.SamplerConfig)}[name]
  kind = type(field.default)
  if kind is bool and isinstance(value, str):
    return value.lower() in ("1", "true", "yes")
  return kind(value)


@register_model(NAME)
class DlmLM(LM):
  """A loaded dlm run as an lm-eval `LM`."""

  def __init__(self, workdir: str | None = None, params: str = "ema", mc_samples: int = 128,
               mc_batch: int = 32, seed: int = 0, new_tokens: int = 256,
               sampler: str | None = None, **options):
    super().__init__()
    for key in HARNESS:
      options.pop(key, None)
    unknown = sorted(set(options) - set(samplers.OPTIONS))
    if unknown:
      raise DlmError(f"unknown {NAME} model argument(s) {unknown}; they are {list(OWN)} and "
                     f"the sampler options {list(samplers.OPTIONS)}")
    if not workdir:
      raise DlmError(f"the {NAME} model needs model_args workdir=DIR")
    if int(new_tokens) <= 0:
      raise DlmError(f"new_tokens must be positive, got {new_tokens}")
    self.run = api.load(workdir, params=params)
    self.sampler = sampler
    self.options = {k: _typed(k, v) for k, v in options.items()}
    api.sampler_config(self.run.family, sampler, **self.options)  # checked now
    self.new_tokens, self.seed = int(new_tokens), int(seed)
    self.scorer = likelihood.Scorer(self.run.model, samples=int(mc_samples),
                                    batch_size=int(mc_batch), seed=self.seed,
                                    max_length=self.run.config.data.seq_len)
    tok = self.run.tokenizer
    self.start = tok.bos_id if self.run.config.data.add_bos else tok.eos_id

  # The harness's requests -------------------------------------------------------------------

  def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip())
    if spaces:
      context, continuation = context[:-spaces], context[-spaces:] + continuation
    tok = self.run.tokenizer
    whole = tok.encode(context + continuation).tolist()
    head = tok.encode(context).tolist()
    context_ids = [self.start] + whole[:len(head)]
    return context_ids, whole[len(head):]

  def loglikelihood(self, requests, disable_tqdm: bool = False):
    pairs = [self._encode_pair(*request.args) for request in requests]
    scores = self.scorer.score_many(pairs, progress=None if disable_tqdm else "loglikelihood")
    return [(score.value, score.is_greedy) for score in scores]

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
    from lm_eval import utils  # pylint: disable=g-import-not-at-top

    windows, owner = [], []
    for r, request in enumerate(requests):
      ids = self.run.tokenizer.encode(request.args[0]).tolist()
      for window in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
          token_list=ids, prefix_token=self.start, max_seq_len=self.run.config.data.seq_len,
          context_len=1)):
        windows.append(window)
        owner.append(r)
    scores = self.scorer.score_many(
        windows, progress=None if disable_tqdm else "loglikelihood_rolling")
    out = [0.0] * len(requests)
    for r, score in zip(owner, scores):
      out[r] += score.value
    return out

  def generate_until(self, requests, disable_tqdm: bool = False):
    out = []
    for i, request in enumerate(tqdm(requests, desc="generate_until", disable=disable_tqdm)):
      context, gen_kwargs = request.args
      gen_kwargs = dict(gen_kwargs or {})
      until = gen_kwargs.pop("until", None) or []
      until = [until] if isinstance(until, str) else list(until)
      new_tokens = int(gen_kwargs.pop("max_gen_toks", self.new_tokens))
      options = dict(self.options)
      if "temperature" in gen_kwargs:
        options["temperature"] = float(gen_kwargs.pop("temperature"))
      gen_kwargs.pop("do_sample", None)
      if gen_kwargs:
        raise DlmError(f"unsupported generation argument(s) {sorted(gen_kwargs)} from the task")
      record = api.sample(self.run, [context], sampler=self.sampler, new_tokens=new_tokens,
                          seed=self.seed + i, **options)[0]
      text = record["generated"]
      for stop in until:
        if stop and stop in text:
          text = text[:text.index(stop)]
      out.append(text)
    return out


def main(argv=None) -> None:
  """`python -m lm_eval ... --model dlm-jax` with the model registered; bad model arguments
  are one `error:` line."""
  import sys  # pylint: disable=g-import-not-at-top

  from lm_eval.__main__ import cli_evaluate  # pylint: disable=g-import-not-at-top

  argv = list(sys.argv[1:] if argv is None else argv)
  if "--model" not in argv and not any(a.startswith("--model=") for a in argv):
    argv = ["--model", NAME, *argv]
  sys.argv = [sys.argv[0], *argv]
  try:
    cli_evaluate()
  except DlmError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
