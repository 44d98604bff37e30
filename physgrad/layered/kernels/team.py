r"""A team of threads running one compiled function together, with spin barriers between its phases.

numba's parallel regions (``prange``) start and join their threads once per region: on this
project's 2-core virtual machine an empty region costs about 50 us (``workqueue``) to 10 us (``omp``),
and a region's threads are woken from sleep each time. A C-EP step of DRN-1H (about 0.9 ms on one
thread) needs several synchronisation points (the phases' relaxation, then the updates), so regions
cost more than the second core brings (``reports/benchmarks/layered.md``).

A :class:`Team` instead runs the *same* compiled function on ``n`` threads at once, SPMD style: the
calling thread is member 0 and ``n - 1`` persistent worker threads (Python threads calling the
``nogil`` compiled function) are members ``1..n-1``; one hand-off per call wakes the workers (their
wake-up overlaps the caller's first phase), and inside the call the members meet at
:func:`barrier` -- an atomic counter and a generation number in a shared ``int64`` array, a few
hundred nanoseconds when every member has a core. A member that waits spins with the ``pause``
instruction for :data:`SPIN` rounds, then calls ``sched_yield`` between checks, so an oversubscribed
machine is not starved by the waiting member.

Memory ordering: a member's writes before :func:`barrier` are visible to every member after it (the
arrival is a sequentially consistent atomic add, the wait an acquire load of the generation).

This module also gives the compiled code its atomics (:func:`atomic_load`, :func:`atomic_add`,
:func:`atomic_store`), the ``pause`` instruction and ``sched_yield`` (LLVM intrinsics and a libc
symbol, so the functions that use them are cached by numba like any other).
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

try:
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
    AVAILABLE = True
except ImportError:  # pragma: no cover - numba absent: nothing here is called
    AVAILABLE = False

    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

    def intrinsic(f):
        return f

SPIN = 20000
"""``pause`` rounds (about 40 ns each on this machine) a waiting member spins before it yields its core between checks."""
ARRIVE, GEN, ABORT, STATUS = 0, 8, 16, 24  # slots of the sync array (separate 64-byte lines)
SLOTS = 32
"""Slots before the per-member results: ``sync[SLOTS + 8 * m]`` belongs to member ``m``."""


def sync_array(n: int) -> np.ndarray:
    """A zeroed sync array for a team of ``n`` members."""
    return np.zeros(SLOTS + 8 * max(int(n), 1), np.int64)


if AVAILABLE:
    def _element_pointer(context, builder, aty, ary, idx):
        arr = context.make_array(aty)(context, builder, ary)
        return cgutils.get_item_pointer(context, builder, aty, arr, [idx], wraparound=False)

    @intrinsic
    def atomic_load(typingctx, arr, idx):
        """``arr[idx]`` (int64) as an acquire load."""
        sig = types.int64(arr, idx)

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            return builder.load_atomic(ptr, "acquire", 8)
        return sig, codegen

    @intrinsic
    def atomic_store(typingctx, arr, idx, val):
        """``arr[idx] = val`` (int64) as a release store."""
        sig = types.void(arr, idx, types.int64)

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            builder.store_atomic(context.cast(builder, args[2], sig.args[2], types.int64), ptr, "release", 8)
            return context.get_dummy_value()
        return sig, codegen

    @intrinsic
    def atomic_add(typingctx, arr, idx, val):
        """``arr[idx] += val`` (int64), sequentially consistent; returns the old value."""
        sig = types.int64(arr, idx, types.int64)

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], sig.args[2], types.int64), "seq_cst")
        return sig, codegen

    @intrinsic
    def cpu_relax(typingctx):
        """The x86 ``pause`` instruction (a spin-wait hint)."""
        sig = types.void()

        def codegen(context, builder, sig, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
            return context.get_dummy_value()
        return sig, codegen

    @intrinsic
    def sched_yield(typingctx):
        """libc's ``sched_yield()``: give the core to another runnable thread."""
        sig = types.void()

        def codegen(context, builder, sig, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(fn, [])
            return context.get_dummy_value()
        return sig, codegen
else:  # pragma: no cover
    atomic_load = atomic_store = atomic_add = cpu_relax = sched_yield = None


@njit(cache=True, nogil=True)
def barrier(sync, n):
    """Wait until all ``n`` members of the team have called this (the same number of times).

    Returns True when the team was aborted (``sync[ABORT]`` set: a member failed before it reached
    the compiled code); the caller then returns at once. ``n == 1`` returns False at once."""
    if n <= 1:
        return False
    gen = atomic_load(sync, GEN)
    if atomic_add(sync, ARRIVE, 1) == n - 1:  # the last to arrive opens the next generation
        atomic_store(sync, ARRIVE, 0)
        atomic_add(sync, GEN, 1)
        return atomic_load(sync, ABORT) != 0
    spins = 0
    while atomic_load(sync, GEN) == gen:
        if atomic_load(sync, ABORT) != 0:
            return True
        spins += 1
        if spins < SPIN:
            cpu_relax()
        else:
            sched_yield()
    return atomic_load(sync, ABORT) != 0


class TeamError(RuntimeError):
    """A worker of a :class:`Team` failed (the original exception is its ``__cause__``)."""


class _Worker:
    """One persistent worker thread: waits for a job, calls ``fn(member, n, sync, *args)``."""

    def __init__(self, member: int):
        self.member = member
        self.job = None
        self.error = None
        self.go = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._loop, name=f"physgrad-team-{member}", daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            self.go.acquire()
            job, self.job = self.job, None
            if job is None:  # close()
                return
            fn, n, sync, args = job
            try:
                fn(self.member, n, sync, *args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by Team.run
                self.error = exc
                sync[ABORT] = 1  # the other members leave their barriers
            del job, fn, sync, args


class Team:
    """``n`` members (the calling thread and ``n - 1`` persistent worker threads) that run one
    compiled ``nogil`` function together: :meth:`run` calls ``fn(m, n, sync, *args)`` on member ``m``
    (``0``: the caller) and returns member 0's result once every member has returned from its part
    (the function must end with a :func:`barrier`, which all members pass).

    Parameters
    ----------
    n : int
        Members (``>= 1``; ``1`` runs ``fn`` on the caller alone, without threads).
    """

    def __init__(self, n: int):
        self.n = max(int(n), 1)
        self.sync = sync_array(self.n)
        self.workers = [_Worker(m) for m in range(1, self.n)]
        self._finalizer = weakref.finalize(self, _stop, list(self.workers))

    def run(self, fn, args: tuple):
        """``fn(m, n, sync, *args)`` on every member; member 0's result. Raises :class:`TeamError` when
        a worker failed (the team is then closed)."""
        if not self.workers:
            return fn(0, 1, self.sync, *args)
        if self.sync[ABORT]:
            raise TeamError("the team was closed after a worker failed")
        for w in self.workers:  # (the sync array is never reset: a member may still be leaving the last barrier)
            w.job = (fn, self.n, self.sync, args)
            w.go.release()
        try:
            out = fn(0, self.n, self.sync, *args)
        except BaseException:
            self.sync[ABORT] = 1
            self.close()
            raise
        failed = [w.error for w in self.workers if w.error is not None]
        if failed or self.sync[ABORT]:
            self.close()
            raise TeamError(f"a worker of the compiled kernel's thread team failed: {failed[0]!r}"
                            if failed else "the thread team was aborted") from (failed[0] if failed else None)
        return out

    def close(self) -> None:
        """Stop the worker threads (they finish their current job first)."""
        self._finalizer()


def _stop(workers) -> None:
    for w in workers:
        w.job = None
        w.go.release()
    for w in workers:
        if w.thread is not threading.current_thread():
            w.thread.join(timeout=5)
