"""Inference (the paper's inference budget): generation from a static KV cache, sampling, weight-only
quantization, perplexity. The HTTP server (`inference.server`, the [serve] extra) is imported on its own.

The names below load their module on first use (see `llamafoundry._exports`). A name is never also a
submodule's (`perplexity()` lives in `inference.perplexity`): importing the submodule would replace it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamafoundry._exports import lazy_exports

if TYPE_CHECKING:
    from llamafoundry.inference.chat import ChatTemplate, load_chat_template, render_chat
    from llamafoundry.inference.generate import Completion, Generator, StepEvent
    from llamafoundry.inference.perplexity import negative_log_likelihood
    from llamafoundry.inference.quantize import QuantConfig, quantize_model
    from llamafoundry.inference.sampling import SamplingParams

_MODULE_OF = {
    "ChatTemplate": "chat",
    "load_chat_template": "chat",
    "render_chat": "chat",
    "Completion": "generate",
    "Generator": "generate",
    "StepEvent": "generate",
    "negative_log_likelihood": "perplexity",
    "QuantConfig": "quantize",
    "quantize_model": "quantize",
    "SamplingParams": "sampling",
}

__all__ = [
    "ChatTemplate",
    "Completion",
    "Generator",
    "QuantConfig",
    "SamplingParams",
    "StepEvent",
    "load_chat_template",
    "negative_log_likelihood",
    "quantize_model",
    "render_chat",
]

__getattr__ = lazy_exports(__name__, _MODULE_OF)
