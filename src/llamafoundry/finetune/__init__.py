"""Section 4 (LLaMA-I): instruction finetuning from any model folder: instruction data, chat templates,
response-only loss, LoRA."""
