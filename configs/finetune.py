"""Fine-tuning a converted released model (or any workdir) on your data: the model section,
the diffusion settings and the tokenizer come from the workdir, the rest from here.

  python -m dlm.convert --from_hf=llada-instruct --workdir=runs/llada-instruct
  python train.py --config=configs/finetune.py:runs/llada-instruct --workdir=runs/llada-sft \
      --config.data.dataset=jsonl:/data/sft/{split}.jsonl --config.data.source_feature=prompt \
      --config.data.target_feature=response --config.data.seq_len=1024

`get_config(WORKDIR)` reads WORKDIR's stored config and returns it with
`train.init_from=WORKDIR` (its parameters initialise the model; a converted workdir's are its
only ones), a fine-tuning schedule (constant learning rate 1e-5 after 50 warm-up steps, EMA
0.999, bfloat16 compute left to `--config.model.dtype`) and LLaDA's SFT loss normalisation
for pair data (`diffusion.loss_norm='response'`, masked family). The tokenizer is the
workdir's (`data.tokenizer.path` empty). Adapters instead of full fine-tuning:
`--config.model.lora_rank=8 --config.train.freeze='^(?!.*lora_)'`.
"""

from dlm.train import restore


def get_config(workdir: str = ""):
  if not workdir:
    raise ValueError("configs/finetune.py needs the workdir to fine-tune: "
                     "--config=configs/finetune.py:WORKDIR")
  config = restore.read_config(workdir)
  config.train.update(init_from=workdir, init_which="ema", steps=1000, lr=1e-5,
                      warmup_steps=50, lr_schedule="constant", ema_decay=0.999,
                      checkpoint_every=500, eval_every=500, log_every=50)
  config.data.tokenizer.path = ""
  if config.model.family == "masked":
    config.diffusion.loss_norm = "response"
  return config
