"""Text metrics: corpus BLEU (Papineni et al. 2002) with sacrebleu for conditional tasks, and
the fraction of known words for samples.

sacrebleu (Post 2018, "A Call for Clarity in Reporting BLEU Scores") fixes the tokenisation
(`13a`, the WMT `mteval-v13a` rules, by default) so scores are comparable across papers.

`known_words` is a check of small models that generative perplexity and entropy miss: a
model that has learned only subword statistics writes letter salad ("thereion ofthe") whose
perplexity under a weak judge can still look fine. A word here is a run of letters (any
script); the score is the fraction of the samples' words that occur, spelled exactly so, in a
reference vocabulary (the training split's words).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

WORD = re.compile(r"[^\W\d_]+")  # a run of letters


def words(text: str) -> list[str]:
  return WORD.findall(text)


def vocabulary(texts: Iterable[str]) -> set[str]:
  """The set of words in texts."""
  known: set[str] = set()
  for text in texts:
    known.update(words(text))
  return known


def known_words(texts: Sequence[str], known: set[str]) -> dict:
  """{"known_words": the fraction of the texts' words in `known` (nan without words),
  "words": how many words the texts have}."""
  found = [w for text in texts for w in words(text)]
  hits = sum(w in known for w in found)
  return {"known_words": hits / len(found) if found else float("nan"), "words": len(found)}

from dlm.errors import DlmError


def bleu(hypotheses: Sequence[str], references: Sequence[str], *,
         tokenize: str = "13a") -> float:
  """Corpus BLEU of `hypotheses` against one reference each, 0 .. 100."""
  import sacrebleu  # pylint: disable=g-import-not-at-top

  hypotheses, references = list(hypotheses), list(references)
  if len(hypotheses) != len(references):
    raise DlmError(f"bleu needs one reference per hypothesis, got {len(hypotheses)} "
                   f"hypotheses and {len(references)} references")
  if not hypotheses:
    raise DlmError("bleu of an empty corpus is undefined: no hypotheses given")
  score = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score
  return min(100.0, float(score))  # 100 may come back as 100.00000000000004
