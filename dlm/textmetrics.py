"""Text metrics for conditional tasks: corpus BLEU (Papineni et al. 2002) with sacrebleu.

sacrebleu (Post 2018, "A Call for Clarity in Reporting BLEU Scores") fixes the tokenisation
(`13a`, the WMT `mteval-v13a` rules, by default) so scores are comparable across papers.
"""

from __future__ import annotations

from typing import Sequence

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
