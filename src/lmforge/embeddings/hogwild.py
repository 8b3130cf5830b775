"""Lock-free parallel SGD (Hogwild, Recht et al. 2011), as word2vec.c, GloVe and gensim run it:
worker threads take batches in turn and update the shared matrices without locks. Updates
are sparse (each batch touches few rows), so threads rarely write the same row at once, and
a lost update now and then does not hurt convergence. torch releases the GIL inside each
operation, so Python threads run the batches' tensor code on several cores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import torch


def run_hogwild(
    jobs: Iterable,
    step: Callable[[object], None],
    workers: int,
    progress: Callable[[float], None] | None = None,
    done: Callable[[object], float] | None = None,
) -> float:
    """Run `step(job)` for every job on `workers` threads; return the seconds taken.
    `progress(share)` is called after each job with `done(job)`, the share of work done."""
    jobs = iter(jobs)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work():
        try:
            while not errors:
                with lock:
                    job = next(jobs, None)
                if job is None:
                    return
                step(job)
                if progress is not None and done is not None:
                    progress(done(job))
        except BaseException as e:  # re-raised in the calling thread
            errors.append(e)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # parallelism comes from the worker threads
    started = time.perf_counter()
    try:
        with torch.no_grad():
            pool = [threading.Thread(target=work, daemon=True) for _ in range(workers - 1)]
            for t in pool:
                t.start()
            work()  # the calling thread is a worker too
            for t in pool:
                t.join()
    finally:
        torch.set_num_threads(threads_before)
    if errors:
        raise errors[0]
    if progress is not None:
        progress(1.0)
    return time.perf_counter() - started
