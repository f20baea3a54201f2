"""dlm: diffusion language models in JAX.

    import dlm

    run = dlm.load("runs/quickstart")            # a workdir: config, tokenizer, model
    print(dlm.generate(run, "The json module", steps=64)[0])

Importing `dlm` registers the built-in model families (`dlm.models`) and their samplers
(`dlm.samplers`).
"""

from dlm import models  # noqa: F401  (registers the built-in families)
from dlm import samplers  # noqa: F401  (registers their samplers)
from dlm.api import Loaded, generate, load, sample  # noqa: F401
from dlm.likelihood import loglikelihood  # noqa: F401
