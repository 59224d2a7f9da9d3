"""The server's batching loop: requests that arrive while the model is busy are decoded together next.

One background thread owns the model. It takes the waiting requests (oldest first, up to `max_batch`,
as long as the longest prompt plus the longest output still fit the cache), runs them as one batch
through `Generator.stream`, and hands each step's text to the request's asyncio queue on the server's
event loop. A request whose client went away is dropped from the hand-off; when a whole batch is gone,
decoding it stops. When a batch fails, each of its requests is decoded again alone, so an error that one
request causes reaches that request only.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from llamafoundry.inference.generate import Generator, StepEvent
from llamafoundry.inference.sampling import SamplingParams


@dataclass
class Request:
    """One prompt in flight: its events arrive on `events` (StepEvent, then None at the end, or an
    Exception if decoding failed)."""

    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    sent: list[int] = field(default_factory=list)  # the tokens of the events handed off so far

    def put(self, item: StepEvent | Exception | None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class BatchingEngine:
    """Runs a `Generator` on a background thread, batching the requests that wait for it."""

    def __init__(self, generator: Generator, max_batch: int = 8) -> None:
        self.generator = generator
        self.max_batch = max_batch
        self._waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llamafoundry-engine", daemon=True)
        self.batches_run = 0  # how many batches were decoded, and how many requests they held in total
        self.requests_run = 0

    def start(self) -> None:
        self.generator.reserve(self.max_batch)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def submit(self, prompt: list[int], params: SamplingParams) -> Request:
        """Queue a prompt (called on the event loop); read its events from the returned request."""
        if params.seed is None:  # fixed now, so that decoding it again alone repeats its tokens
            params = params.replace(seed=int(torch.randint(0, 2**62, ())))
        request = Request(prompt, params, asyncio.get_running_loop())
        with self._wake:
            self._waiting.append(request)
            self._wake.notify()
        return request

    def _take_batch(self) -> list[Request]:
        with self._wake:
            while not self._waiting and not self._stopping:
                self._wake.wait()
            batch: list[Request] = []
            kept: deque[Request] = deque()
            while self._waiting:
                request = self._waiting.popleft()
                if request.cancelled:
                    continue
                if len(batch) < self.max_batch and self._fits(batch + [request]):
                    batch.append(request)
                else:
                    kept.append(request)
            self._waiting = kept
            return batch

    def _fits(self, batch: list[Request]) -> bool:
        # Left padding puts every row at the longest prompt's end: that plus the longest output must fit.
        longest = max(len(r.prompt) for r in batch) + max(r.params.max_new_tokens for r in batch)
        return len(batch) == 1 or longest <= self.generator.max_seq_len

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if self._stopping:
                for request in batch:
                    request.put(RuntimeError("the server is shutting down"))
                return
            if batch:
                self._decode(batch)

    def _decode(self, batch: list[Request]) -> None:
        self.batches_run += 1
        self.requests_run += len(batch)
        try:
            self._hand_off(batch)
        except Exception as exc:  # a request the checks missed, our bug or a resource error
            if len(batch) == 1:
                batch[0].put(exc)
                return
            # Which request caused it is unknown: decode each again alone, so that only a request that
            # fails alone gets an error and the others complete.
            for request in batch:
                if not request.cancelled:
                    self._decode([request])
            return
        for request in batch:
            request.put(None)

    def _hand_off(self, batch: list[Request]) -> None:
        """Decode the batch, handing each request the events it has not had yet."""
        steps = self.generator.stream([r.prompt for r in batch], [r.params for r in batch])
        counts = [0] * len(batch)  # events per request in this decoding
        for events in steps:
            for event in events:
                request, done = batch[event.index], counts[event.index]
                counts[event.index] += 1
                if done < len(request.sent):  # handed off by a batch that failed later
                    if event.token != request.sent[done]:
                        raise RuntimeError("decoding the request again gave other tokens; send it again")
                elif not request.cancelled:
                    request.sent.append(event.token)
                    request.put(event)
            if all(r.cancelled for r in batch):
                steps.close()
                return
