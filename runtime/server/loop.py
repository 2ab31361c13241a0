"""The engine loop: one thread owns the engine; HTTP handlers reach it through queues.

Handlers (on the asyncio thread) put commands in the inbox; the loop thread runs them
between steps, so a request that arrives while others decode joins the next step. Each
step's outputs go back to their requests' asyncio queues with `call_soon_threadsafe`, so a
token leaves for its client as soon as it is sampled.
"""

import asyncio
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial

from llmc.runtime.tensor_parallel import RankFailed

from .metrics import ServerMetrics

log = logging.getLogger("llmc.serve")

_STOP = object()


class Unavailable(Exception):
    """The server cannot take a request now (overloaded, or shutting down): HTTP 503."""


class RequestStream:
    """The asyncio side of one request: its outputs in order (of all its `samples`), then the end."""

    def __init__(self, request_id: str, engine_loop: "EngineLoop", samples: int = 1):
        self.request_id = request_id
        self.admitted = asyncio.get_running_loop().create_future()
        self.finished = False
        self._unfinished_samples = samples
        self._engine_loop = engine_loop
        self._outputs: asyncio.Queue = asyncio.Queue()

    async def __aiter__(self):
        while not self.finished:
            item = await self._outputs.get()
            if isinstance(item, BaseException):
                self.finished = True
                raise item
            self._unfinished_samples -= item.finished
            self.finished = self._unfinished_samples == 0
            yield item

    def put(self, item) -> None:
        self._outputs.put_nowait(item)

    def close(self) -> None:
        """Abort the request unless it has finished: nobody is listening any more."""
        if not self.finished:
            self.finished = True
            self._engine_loop.abort(self.request_id)


@dataclass
class _Tracked:
    stream: RequestStream
    arrival: float
    unfinished_samples: int = 1
    last_token: float | None = None


class EngineLoop:
    def __init__(self, engine, metrics: ServerMetrics, max_waiting: int):
        self.engine = engine
        self.metrics = metrics
        self.max_waiting = max_waiting
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._aio: asyncio.AbstractEventLoop | None = None
        self._closing = False
        # asyncio thread only: requests in the inbox, and the engine's queue as last reported
        self._pending = 0
        self._num_waiting = 0
        # loop thread only
        self._tracked: dict[str, _Tracked] = {}

    # --- asyncio thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._aio = asyncio.get_running_loop()
        self.metrics.set_engine_stats(self.engine.stats())
        self._thread = threading.Thread(target=self._run, name="llmc-engine-loop", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Abort what is left and end the thread (the HTTP server has drained by now)."""
        self._closing = True
        if self._thread is not None:
            self._inbox.put(_STOP)
            await asyncio.to_thread(self._thread.join, timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def queued(self) -> int:
        """Requests waiting for a place in the batch: in the inbox, or in the engine's queue."""
        return self._pending + self._num_waiting

    async def submit(self, request_id: str, prompt_token_ids: list[int], params) -> RequestStream:
        """Hand a request to the engine; raises Unavailable, or the engine's refusal (UserError)."""
        if self._closing:
            raise Unavailable("the server is shutting down")
        if self.queued >= self.max_waiting:
            raise Unavailable(f"the server is overloaded: {self.max_waiting} requests are waiting; retry later")
        stream = RequestStream(request_id, self, params.n)
        self._pending += 1
        self._inbox.put(partial(self._add, request_id, prompt_token_ids, params, stream, time.monotonic()))
        try:
            await stream.admitted
        except asyncio.CancelledError:
            stream.close()
            raise
        return stream

    def abort(self, request_id: str) -> None:
        self._inbox.put(partial(self._abort, request_id))

    def _admitted(self, stream: RequestStream, error: Exception | None, num_waiting: int) -> None:
        self._pending -= 1
        self._num_waiting = num_waiting
        if error is not None:
            stream.finished = True
        if stream.admitted.done():  # its handler was cancelled meanwhile
            return
        if error is not None:
            stream.admitted.set_exception(error)
        else:
            stream.admitted.set_result(None)

    def _set_num_waiting(self, num_waiting: int) -> None:
        self._num_waiting = num_waiting

    # --- loop thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                commands = self._commands(block=not self.engine.has_unfinished())
                for command in commands:
                    if command is _STOP:
                        self._abort_all(Unavailable("the server shut down before the request finished"))
                        return
                    command()
                if commands:
                    self._publish_stats()
                if self.engine.has_unfinished():
                    self._step()
        except RankFailed:
            return  # said in one line by _step
        except Exception:
            log.exception("the engine loop died")
            self._abort_all(Unavailable("the engine loop died"))

    def _commands(self, block: bool) -> list:
        commands = [self._inbox.get()] if block else []
        while True:
            try:
                commands.append(self._inbox.get_nowait())
            except queue.Empty:
                return commands

    def _add(self, request_id, prompt_token_ids, params, stream, arrival) -> None:
        try:
            self.engine.add_request(request_id, prompt_token_ids, params)
        except Exception as e:  # UserError: a prompt the engine can never serve
            self._call(self._admitted, stream, e, self.engine.stats()["num_waiting"])
            return
        self._tracked[request_id] = _Tracked(stream, arrival, params.n)
        self._call(self._admitted, stream, None, self.engine.stats()["num_waiting"])

    def _abort(self, request_id: str) -> None:
        tracked = self._tracked.pop(request_id, None)
        if tracked is not None:
            self.engine.abort(request_id)
            self.metrics.finished("abort", time.monotonic() - tracked.arrival)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except RankFailed as e:  # the ranks are gone: no later step can run, so the server goes too
            log.error("%s; the server stops", e)
            self._abort_all(Unavailable(str(e)))
            os.kill(os.getpid(), signal.SIGTERM)
            raise
        except Exception as e:
            log.exception("engine step failed; failing its %d requests", len(self._tracked))
            self._abort_all(e)
            return
        now = time.monotonic()
        for out in outputs:
            tracked = self._tracked.get(out.request_id)
            if tracked is None:  # aborted while the step ran
                continue
            self._observe(tracked, out, now)
            # a request the engine failed alone (its step failed): an error for its client, not a finish
            self._call(tracked.stream.put, RuntimeError(f"the request failed: {out.error}") if out.error else out)
            tracked.unfinished_samples -= out.finished
            if tracked.unfinished_samples == 0:
                del self._tracked[out.request_id]
        self._publish_stats()

    def _observe(self, tracked: _Tracked, out, now: float) -> None:
        if out.new_token_ids:
            if tracked.last_token is None:
                self.metrics.first_token(now - tracked.arrival, out.num_prompt_tokens)
                self.metrics.tokens(len(out.new_token_ids), None)
            else:
                self.metrics.tokens(len(out.new_token_ids), now - tracked.last_token)
            tracked.last_token = now
        if out.finished:
            self.metrics.finished(out.finish_reason or "abort", now - tracked.arrival)

    def _abort_all(self, error: Exception) -> None:
        for request_id, tracked in list(self._tracked.items()):
            try:
                self.engine.abort(request_id)
            except Exception:
                log.exception("could not abort %s", request_id)
            self.metrics.finished("abort", time.monotonic() - tracked.arrival)
            self._call(tracked.stream.put, error)
        self._tracked.clear()
        try:
            self._publish_stats()
        except Exception:
            log.exception("could not read the engine's stats")

    def _publish_stats(self) -> None:
        stats = self.engine.stats()
        self.metrics.set_engine_stats(stats)
        self._call(self._set_num_waiting, stats["num_waiting"])

    def _call(self, fn, *args) -> None:
        try:
            self._aio.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop has closed: nobody is waiting
            pass
