"""Admission and micro-batching: a bounded queue before the device; concurrent like requests run as one batch."""
from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnxruntime as ort

from ..errors import BadRequest
from ..explainer import Explainer, Explanation
from ..methods import METHODS
from ..runtime import RUN_OPTIONS


class Overloaded(Exception):
    """Every run slot is busy and the queue is full: the caller should back off (RESOURCE_EXHAUSTED)."""


class Cancelled(Exception):
    """Every caller of a run went away (cancelled, or past its deadline) and the run was stopped."""


@dataclass(eq=False)
class _Job:
    x: np.ndarray
    rows: np.ndarray
    future: asyncio.Future
    batch: "_Batch | None" = None
    started: bool = False


@dataclass(eq=False)
class _Batch:
    work: Callable[[list[_Job]], list]   # the jobs' inputs -> one result per job, in a worker thread
    jobs: list[_Job] = field(default_factory=list)
    images: int = 0
    stop: ort.RunOptions | None = None   # set while running: terminate stops the run mid-graph
    key: tuple | None = None             # where it is open for company, if it is
    waiting: bool = False                # asked for a run slot already

    def live(self) -> list[_Job]:
        return [job for job in self.jobs if not job.future.done()]


def batchable(method: str) -> bool:
    # images of a batch must not change each other's maps (measured: every batchable method gives the
    # same maps alone as in a batch, to 2.4e-7); a method says whether it can promise that
    spec = METHODS.get(method)
    return spec is not None and spec.batchable


class Batcher:
    """`await explain(...)` as `Explainer.explain_full` would answer it, but through at most `workers`
    concurrent runs, `max_queue` waiting requests, and batches of up to `max_batch` images gathered
    for at most `max_delay` seconds among requests of the same model, method, layers and options
    (0: no waiting, yet the requests that arrive while every run slot is busy still join). The values
    come from the server's ServerConfig, the one place their defaults are written."""

    def __init__(self, workers: int, max_queue: int, max_batch: int, max_delay: float, metrics=None):
        self.workers, self.max_queue, self.max_batch, self.max_delay = workers, max_queue, max_batch, max_delay
        self.metrics = metrics
        self.admitted = 0
        self._slots = asyncio.Semaphore(workers)
        self._open: dict[tuple, _Batch] = {}
        self._running: set[_Batch] = set()
        self._tasks: set[asyncio.Task] = set()

    async def explain(self, explainer: Explainer, x: np.ndarray, rows: np.ndarray, method: str,
                      layers: list[str] | None, fusion: str | None, options: dict) -> Explanation:
        call = (method, tuple(layers or ()), fusion, tuple(sorted(options.items())))
        job = _Job(x, rows, asyncio.get_running_loop().create_future())
        work = functools.partial(_explain, explainer, call)
        if self.max_batch > 1 and batchable(method):
            return await self._wait(job, lambda: self._gather((id(explainer), call, x.shape[1:]), work, job))
        return await self._wait(job, lambda: self._start(_Batch(work, [job], len(x))))

    async def call(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) in a worker thread, alone, under the same queue and run slots as explanations;
        its runs see the RUN_OPTIONS that a cancellation or a passed deadline terminates."""
        job = _Job(np.empty(0), np.empty(0), asyncio.get_running_loop().create_future())
        return await self._wait(job, lambda: self._start(_Batch(lambda jobs: [fn(*args, **kwargs)], [job])))

    async def _wait(self, job: _Job, enqueue: Callable[[], None]):
        if self.admitted >= self.workers + self.max_queue:
            raise Overloaded(f"the server is at its limit ({self.workers} running, {self.max_queue} queued); "
                             "retry with backoff")
        self.admitted += 1
        self._gauge("queue_depth", 1)
        try:
            enqueue()
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        finally:
            self.admitted -= 1
            if not job.started:
                self._gauge("queue_depth", -1)

    def cancel_all(self) -> None:
        """Stop every run in progress (shutdown, once the grace period is over)."""
        for batch in list(self._running):
            batch.stop.terminate = True

    # -- gathering ------------------------------------------------------------------------------
    def _gather(self, key: tuple, work: Callable, job: _Job) -> None:
        batch = self._open.get(key)
        if batch is not None and batch.images + len(job.x) > self.max_batch:
            self._close(key, batch)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(work, key=key)
            asyncio.get_running_loop().call_later(self.max_delay, self._due, batch)
        batch.jobs.append(job)
        batch.images += len(job.x)
        job.batch = batch
        if batch.images >= self.max_batch:
            self._close(key, batch)

    def _due(self, batch: _Batch) -> None:
        # the delay is over: the batch asks for a run slot, and keeps taking company until it gets one
        # (with every slot busy, requests pile up behind it, and the next run takes them all)
        if not batch.waiting:
            self._start(batch)

    def _close(self, key: tuple, batch: _Batch) -> None:
        """Full: no one else joins; it runs as soon as a slot frees."""
        if self._open.get(key) is batch:
            del self._open[key]
        if not batch.waiting:
            self._start(batch)

    def _start(self, batch: _Batch) -> None:
        batch.waiting = True
        for job in batch.jobs:
            job.batch = batch
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _abandon(self, job: _Job) -> None:
        batch = job.batch
        if batch is not None and batch.stop is not None and not batch.live():
            batch.stop.terminate = True   # nobody waits for this run any more: free the device

    # -- running --------------------------------------------------------------------------------
    async def _run(self, batch: _Batch) -> None:
        async with self._slots:
            if batch.key is not None and self._open.get(batch.key) is batch:
                del self._open[batch.key]
            jobs = batch.live()
            if not jobs:
                return
            batch.stop = ort.RunOptions()
            self._running.add(batch)
            for job in jobs:
                job.started = True
            self._gauge("queue_depth", -len(jobs))
            self._gauge("in_flight", len(jobs))
            try:
                if self.metrics is not None and batch.images:
                    self.metrics.batch(sum(len(job.x) for job in jobs))
                try:
                    results = await asyncio.to_thread(self._work, batch, jobs)
                except BadRequest:
                    if len(jobs) == 1:
                        raise
                    # one caller's input spoiled the batch: run each alone so only its own call fails
                    results = [await asyncio.to_thread(self._guarded, batch, [job]) for job in jobs]
                for job, result in zip(jobs, results):
                    _settle(job.future, result)
            except Exception as error:
                for job in jobs:
                    _settle(job.future, error)
            finally:
                self._running.discard(batch)
                self._gauge("in_flight", -len(jobs))
                for job in batch.jobs:   # job <-> batch is a cycle: without this, inputs wait for the GC
                    job.batch = None
                batch.jobs = []

    @staticmethod
    def _guarded(batch: _Batch, jobs: list[_Job]):
        try:
            return Batcher._work(batch, jobs)[0]
        except (BadRequest, Cancelled) as error:
            return error

    @staticmethod
    def _work(batch: _Batch, jobs: list[_Job]) -> list:
        RUN_OPTIONS.set(batch.stop)   # this worker thread's context only: the runs of this work see it
        try:
            return batch.work(jobs)
        except BadRequest:
            raise
        except Exception as error:
            if batch.stop.terminate:
                raise Cancelled("every caller of this run went away; the run was stopped") from error
            raise

    def _gauge(self, name: str, delta: int) -> None:
        if self.metrics is not None and delta:
            getattr(self.metrics, name).inc(delta)


def _explain(explainer: Explainer, call: tuple, jobs: list[_Job]) -> list[Explanation]:
    method, layers, fusion, options = call
    x = np.concatenate([job.x for job in jobs])
    rows = np.concatenate([job.rows for job in jobs])
    # the servicer checked the input and made the rows: the Explainer need not check them again
    result = explainer.explain_rows(x, rows, method, list(layers) or None, fusion, **dict(options))
    return list(_split(result, [len(job.x) for job in jobs]))


def _split(result: Explanation, sizes: list[int]):
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        yield Explanation(result.maps[part], result.method, result.layers, result.targets[part],
                          result.logits[part], result.fusion, options=result.options)
        start += size


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
