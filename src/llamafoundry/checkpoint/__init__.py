"""Model folders in and out: ours, Meta's, Hugging Face's, llama2.c's."""

from llamafoundry.checkpoint.formats import check_export, detect_format, export, load_model, save_model

__all__ = ["check_export", "detect_format", "export", "load_model", "save_model"]
