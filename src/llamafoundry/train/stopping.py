"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (what schedulers and torchrun send).

The first signal only asks the loop to stop: it finishes the step under way, so the model, the optimizer
and the data loader's position agree, saves a checkpoint there and raises `Interrupted`. Resuming from
that checkpoint is exact, as after any checkpoint. Ranks agree on the step to stop at (the loop asks
`requested()` at every step boundary, a collective), so a signal that reaches one rank stops them all
at the same step.

A second signal in a single process stops at once, without saving: the last complete checkpoint stays
the one to resume from. Under torchrun it is ignored: torchrun forwards the signal it gets to every rank,
so a Ctrl-C in a terminal arrives twice, and it SIGKILLs ranks that are still running 30 s later.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from llamafoundry.errors import Interrupted
from llamafoundry.train.distributed import Runtime, max_over_ranks

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While entered, SIGINT and SIGTERM ask for a stop instead of raising wherever they land.

    Only the main thread can handle signals: entered from another thread, it changes nothing.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python

    def requested(self) -> int:
        """The signal that asked any rank to stop, or 0 (collective: every rank calls it at the same step)."""
        return max_over_ranks(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.signum:
            self.signum = signum
        elif not self.rt.distributed:
            raise Interrupted(
                f"stopped at once by a second {signal.Signals(signum).name}, without saving; --resume "
                "continues from the last complete checkpoint",
                signum,
            )
