"""Instruction tuning with eos or rainbow padding (Kim et al., arXiv 2510.03680), masked family.

  python train.py --config=configs/instruct.py:base --workdir=runs/instruct/base
  python train.py --config=configs/instruct.py:eos --workdir=runs/instruct/eos \
      --config.train.init_from=runs/instruct/base
  python train.py --config=configs/instruct.py:rainbow --workdir=runs/instruct/rainbow \
      --config.train.init_from=runs/instruct/base
  python train.py --config=configs/instruct.py:lora --workdir=runs/instruct/lora \
      --config.train.init_from=runs/instruct/eos
  python bench/length_robustness.py   # all four, then the length table

`base`: a small masked model pretrained on the stdlib prose (`python_stdlib/docs`, rows of 128),
with a nearly byte-level tokenizer (320 tokens: the 256 bytes, 4 special tokens, the 7 reserved
pads and 53 BPE merges), whose validation bound ends well below its unigram entropy (5.6 against
6.2 bits per token). Decoded in LLaDA's 32-token blocks (the bench's default) rainbow padding
holds the response length; decoded as one block it does not at this scale (README,
"Instruction tuning and rainbow padding").
`eos` / `rainbow`: supervised fine-tuning of the whole base model on `python_stdlib/instruct`
(prompt = a function's qualified signature and the first sentence of its docstring, response =
the rest of the docstring): rows `[bos] prompt [eos] response [eos] ...` of 128 + 512 tokens,
the prompt (up to 126 tokens) given and never noised, the response padded to the 512-token
generation length with repeated eos or with one eos and pad_0 .. pad_6 cycling; LLaDA's loss
normalisation (each row's loss divided by its response length, padding included).
`lora`: the rainbow retrofit of the eos model: rank-8 adapters on every block's dense weights
and the output bias train for one epoch, everything else is frozen. Fine-tuning uses the
pretrained workdir's tokenizer.
"""

from dlm.config import base_config

VARIANTS = ("base", "eos", "rainbow", "lora")
PROMPT_LEN = 126  # prompt tokens kept: [bos] prompt [eos] is at most 128 tokens
GENERATION_LEN = 512
VOCAB = 320  # 256 bytes, 4 special tokens, 7 reserved pads and 53 BPE merges


def get_config(variant: str = "eos"):
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r} for configs/instruct.py; one of {VARIANTS}")
  config = base_config()
  config.data.tokenizer.vocab_size = VOCAB
  config.model.update(family="masked", width=128, depth=4, heads=2, time_conditioning="none",
                      head_init_std=128**-0.5)
  config.diffusion.schedule = "linear"
  if variant == "base":
    config.data.dataset = "tfds:python_stdlib/docs"
    config.data.seq_len = 128
    config.train.update(steps=2000, batch_size=32, lr=2e-3, b2=0.95, warmup_steps=50,
                        ema_decay=0.999, log_every=100, eval_every=1000, checkpoint_every=500,
                        eval_batches=20)
    return config
  config.data.update(dataset="tfds:python_stdlib/instruct", source_feature="prompt",
                     target_feature="response", source_len=PROMPT_LEN,
                     seq_len=PROMPT_LEN + 2 + GENERATION_LEN,
                     response_padding="eos" if variant == "eos" else "rainbow")
  config.diffusion.loss_norm = "response"
  config.train.update(steps=800, batch_size=8, lr=1e-3, b2=0.95, warmup_steps=20,
                      lr_schedule="constant", log_every=50, eval_every=400,
                      checkpoint_every=200, eval_batches=4, ema_decay=0.99)
  if variant == "lora":
    config.model.lora_rank = 8
    # One epoch of the 3449 training pairs, as the paper's single-epoch LoRA retrofit.
    config.train.update(steps=432, lr=3e-3, eval_every=216, checkpoint_every=216,
                        freeze="^(?!.*lora_)(?!net/unembed_bias$)")
  return config
