"""Template render workers: processes running :mod:`nodes.core.sandbox`, reused between
renders, killed when a render overruns its time or its run is cancelled.

A render waits for a free worker in threads of this pool's own (at most
:data:`POOL_SIZE` at once), never in the default executor's threads, so template bombs
cannot starve the server's other blocking work. Each worker caps its own memory and CPU
time (see :mod:`nodes.core.sandbox`); :class:`WorkerPool` kills one that does not answer
within the render's time limit plus :data:`GRACE_S`.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SANDBOX = Path(__file__).with_name("sandbox.py")
POOL_SIZE = max(2, min(4, os.cpu_count() or 2))
GRACE_S = 1.0
"""How long past its time limit a worker may take to report the overrun itself."""


@dataclass(frozen=True)
class Limits:
    """A render's bounds: seconds, output characters, worker memory in MB."""

    timeout_s: float
    max_chars: int
    memory_mb: int


class RenderError(Exception):
    """A render that failed; ``kind`` is one of :data:`nodes.core.sandbox.ERROR_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


class Worker:
    """One render worker process (see :mod:`nodes.core.sandbox`)."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(SANDBOX), str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, request: bytes, deadline: float) -> dict[str, Any]:
        """Send one request and wait for its answer until ``deadline`` (monotonic).

        Raises:
            RenderError: ``too_slow`` past the deadline (the worker is killed), or
                ``error`` when the worker stopped without answering.
        """
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(len(request).to_bytes(4, "big") + request)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            raise RenderError("error", "the template worker stopped") from None
        fd = self.proc.stdout.fileno()
        header = self._read(fd, 4, deadline)
        return dict(json.loads(self._read(fd, int.from_bytes(header, "big"), deadline)))

    def _read(self, fd: int, n: int, deadline: float) -> bytes:
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while len(data) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise RenderError("too_slow", "the render took too long")
                chunk = os.read(fd, n - len(data))
                if not chunk:
                    self.kill()
                    if self.proc.returncode in (-signal.SIGKILL, -signal.SIGXCPU):
                        raise RenderError("too_slow", "the render took too long")
                    raise RenderError(
                        "error", f"the template worker stopped (exit status {self.proc.returncode})"
                    )
                data += chunk
        return data

    def stop(self) -> None:
        """Kill the process (safe from any thread; its owner then calls :meth:`kill`)."""
        if self.proc.poll() is None:
            self.proc.kill()

    def kill(self) -> None:
        """Kill the process, reap it and close its pipes (by the thread that owns it)."""
        self.stop()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class Job:
    """One render in a worker; :meth:`cancel` (from any thread) kills its worker."""

    def __init__(self, request: bytes, timeout_s: float) -> None:
        self.request, self.timeout_s = request, timeout_s
        self.cancelled = False
        self.worker: Worker | None = None
        self.lock = threading.Lock()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            worker = self.worker
        if worker is not None:
            worker.stop()  # its thread sees the pipe close and reaps it


class WorkerPool:
    """Idle workers by memory cap, and the threads that wait on busy ones."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self.size = size
        self.pid = os.getpid()
        self.idle: list[Worker] = []
        self.lock = threading.Lock()
        self.threads = ThreadPoolExecutor(size, thread_name_prefix="template-render")

    def run(self, job: Job, memory_mb: int) -> dict[str, Any]:
        """Render ``job`` in a worker (blocking; called in :attr:`threads`)."""
        deadline = time.monotonic() + job.timeout_s + GRACE_S
        worker = self._take(memory_mb)
        with job.lock:
            if job.cancelled:
                self._give_back(worker)
                raise RenderError("error", "the render was cancelled")
            job.worker = worker
        try:
            answer = worker.call(job.request, deadline)
        finally:
            with job.lock:
                job.worker = None
        if answer.get("error") in ("memory", "too_slow"):
            worker.kill()  # it exits by itself after such an answer
        self._give_back(worker)
        return answer

    def _take(self, memory_mb: int) -> Worker:
        with self.lock:
            while self.idle:
                worker = self.idle.pop()
                if worker.alive and worker.memory_mb == memory_mb:
                    return worker
                worker.kill()
        return Worker(memory_mb)

    def _give_back(self, worker: Worker) -> None:
        if not worker.alive:
            worker.kill()
            return
        with self.lock:
            if len(self.idle) < self.size:
                self.idle.append(worker)
                return
        worker.kill()

    def close(self) -> None:
        """Stop every idle worker (busy ones stop when their render ends)."""
        with self.lock:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.kill()


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def pool() -> WorkerPool:
    """This process's worker pool (made on first use; a forked child makes its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = WorkerPool()
            atexit.register(_pool.close)
        return _pool


async def render_in_worker(source: str, variables: dict[str, Any], limits: Limits) -> str:
    """Render in a worker process, bounded by ``limits``; cancelling the awaiting task
    kills the worker at once.

    Raises:
        RenderError: the template failed, overran a limit, or the worker stopped.
    """
    request = json.dumps(
        {
            "template": source,
            "vars": variables,
            "max_chars": limits.max_chars,
            "timeout_s": limits.timeout_s,
        }
    ).encode("utf-8")
    job = Job(request, limits.timeout_s)
    workers = pool()
    loop = asyncio.get_running_loop()
    try:
        answer = await loop.run_in_executor(workers.threads, workers.run, job, limits.memory_mb)
    except asyncio.CancelledError:
        job.cancel()
        raise
    if "text" in answer:
        return str(answer["text"])
    raise RenderError(str(answer.get("error", "error")), str(answer.get("message", "")))
