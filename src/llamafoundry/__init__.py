"""llamafoundry: the LLaMA paper (Touvron et al., 2023) end to end."""

__version__ = "0.1.0"
