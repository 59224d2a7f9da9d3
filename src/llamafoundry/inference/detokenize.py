"""Token ids to text, one token at a time, for streaming and stop strings.

SentencePiece decodes a sequence, not a token: a piece's leading space depends on what precedes it, and
a character outside the vocabulary arrives as several byte tokens (in Llama 3's byte-level BPE any token
may end inside a UTF-8 character; its decoders give U+FFFD for the unfinished bytes). So each step
decodes the output after a few tokens of the prompt (which give the first piece its context) and emits
only text that can no longer change: never half a UTF-8 character, never the start of what may become a
stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

_CONTEXT_TOKENS = 4  # prompt tokens decoded before the output, then cut off again
_INCOMPLETE = "\ufffd"  # what every tokenizer of ours decodes an unfinished byte sequence to


class Decodes(Protocol):
    """What decoding needs of a tokenizer: ours, or a wrapper of a Hugging Face one."""

    def decode(self, ids: Sequence[int]) -> str: ...


def find_stop(text: str, stop: Sequence[str], start: int = 0) -> int | None:
    """Where the earliest stop string in `text` (from `start` on) begins; None when there is none."""
    hits = [i for i in (text.find(s, start) for s in stop) if i >= 0]
    return min(hits) if hits else None


class IncrementalDecoder:
    """Text of the generated tokens, released in pieces that stop strings cannot take back."""

    def __init__(self, tokenizer: Decodes, prompt: Sequence[int], stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.context = list(prompt[-_CONTEXT_TOKENS:])
        self.prefix = tokenizer.decode(self.context)
        self.ids: list[int] = []
        self.text = ""  # all text released so far
        self.stopped = False

    def _decoded(self) -> str:
        full = self.tokenizer.decode(self.context + self.ids)
        # The prompt's tail decodes the same alone and in front of the output, except in odd byte cases.
        return full[len(self.prefix) :] if full.startswith(self.prefix) else self.tokenizer.decode(self.ids)

    def add(self, token: int) -> str:
        """Take one generated token; return the newly released text (may be empty)."""
        return self.extend([token])

    def extend(self, tokens: Sequence[int]) -> str:
        """Take several generated tokens at once (a finished output: one decode, not one per token)."""
        self.ids.extend(tokens)
        text = self._decoded()
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0))
        hit = find_stop(text, self.stop, start)
        if hit is not None:
            self.stopped = True
            return self._release(text[:hit])
        safe = len(text.rstrip(_INCOMPLETE))
        for s in self.stop:  # hold back a tail that could still grow into a stop string
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe = min(safe, len(text[:safe]) - k)
                    break
        return self._release(text[: max(safe, len(self.text))])

    def flush(self) -> str:
        """At the end of generation: whatever is held back (a stop-string prefix that never completed)."""
        return "" if self.stopped else self._release(self._decoded().rstrip(_INCOMPLETE))

    def _release(self, text: str) -> str:
        delta = text[len(self.text) :]
        self.text = text if len(text) > len(self.text) else self.text
        return delta
