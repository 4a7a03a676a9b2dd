"""The offline RFT testbed: a character tokenizer and a ~1M-parameter Llama built in code, warmed up by
supervised training, three tasks (two arithmetic families and a calculator tool task), a held-out accuracy
evaluation and a GRPO runner. Cheap enough to train hundreds of real runs on two CPU cores."""
