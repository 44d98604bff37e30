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
ARRIVE, GEN, ABORT, STATUS, GO, STOP = 0, 8, 16, 24, 32, 40  # slots of the sync array (separate 64-byte lines)
SLOTS = 48
"""Slots before the per-member ones: ``sync[SLOTS + 8 * m]`` (a result), ``sync[SLOTS + 8 * m + 1]`` (the
member's state: :data:`ACTIVE`, :data:`PARKED`, :data:`CLAIMED`) and ``sync[SLOTS + 8 * m + 2]`` (the last
call it made) belong to member ``m``."""
ACTIVE, PARKED, CLAIMED = 0, 1, 2
IDLE = 50000
"""``pause`` rounds (about 2 ms) a worker waits for the next call in compiled code before it parks (sleeps in Python)."""


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
    def atomic_cas(typingctx, arr, idx, old, new):
        """``arr[idx] = new`` if it holds ``old`` (int64), sequentially consistent; True when it did."""
        sig = types.boolean(arr, idx, types.int64, types.int64)

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            old_ = context.cast(builder, args[2], sig.args[2], types.int64)
            new_ = context.cast(builder, args[3], sig.args[3], types.int64)
            res = builder.cmpxchg(ptr, old_, new_, "seq_cst", "seq_cst")
            return builder.extract_value(res, 1)
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
    atomic_load = atomic_store = atomic_add = atomic_cas = cpu_relax = sched_yield = None


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


@njit(cache=True, nogil=True)
def claim(sync, n):
    """Member 0, before a call: mark every worker :data:`CLAIMED` (none may park now) and start the call
    (``GO`` advances). Returns False, claiming nothing, when a worker is parked (the caller wakes it)."""
    for m in range(1, n):
        if not atomic_cas(sync, SLOTS + 8 * m + 1, ACTIVE, CLAIMED):
            for q in range(1, m):
                atomic_store(sync, SLOTS + 8 * q + 1, ACTIVE)
            return False
    atomic_add(sync, GO, 1)
    return True


@njit(cache=True, nogil=True)
def unclaim(sync, n):
    """Member 0, after a call (every member has passed the call's last barrier): workers may park again."""
    for m in range(1, n):
        atomic_store(sync, SLOTS + 8 * m + 1, ACTIVE)


@njit(cache=True, nogil=True)
def wait_call(sync, m):
    """Worker ``m``: wait for the next call (``GO`` past the last call the worker made, which it records).
    Returns True for a call, False when the worker parked (:data:`IDLE` rounds without a call; it must
    sleep in Python) or the team stops."""
    seen = sync[SLOTS + 8 * m + 2]
    spins = 0
    while True:
        go = atomic_load(sync, GO)
        if atomic_load(sync, STOP) != 0:
            return False
        if go != seen:
            sync[SLOTS + 8 * m + 2] = go
            return True
        spins += 1
        if spins < IDLE:
            cpu_relax()
        elif atomic_cas(sync, SLOTS + 8 * m + 1, ACTIVE, PARKED):
            return False


class TeamError(RuntimeError):
    """A worker of a :class:`Team` failed (the original exception is its ``__cause__``)."""


class _Worker:
    """One persistent worker thread: runs ``loop(m, n, sync, *args)`` (compiled: waits for calls with
    :func:`wait_call` and makes its part of each) and sleeps on a semaphore while parked."""

    def __init__(self, member: int, n: int, sync, loop, args: tuple):
        self.member = member
        self.error = None
        self.sent = self.seen = 0  # wake-ups released by the caller / taken by this worker
        self.go = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._run, args=(n, sync, loop, args),
                                       name=f"physgrad-team-{member}", daemon=True)
        self.thread.start()

    def _run(self, n, sync, loop, args):
        slot = SLOTS + 8 * self.member + 1
        try:
            while True:
                loop(self.member, n, sync, *args)  # returns when parked or stopped
                if sync[STOP]:
                    return
                self.go.acquire()  # parked: sleep until woken
                self.seen += 1
                if sync[STOP]:
                    return
                sync[slot] = ACTIVE
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by Team.run
            self.error = exc
            sync[ABORT] = 1  # the other members leave their barriers


class Team:
    """``n`` members -- the calling thread and ``n - 1`` persistent worker threads -- that make each
    call of a compiled ``nogil`` function together.

    The workers run ``loop(m, n, sync, *args)`` on the arguments given to :meth:`run` (arrays, kept:
    the caller changes their contents between calls, and :meth:`run` restarts the workers when it is
    given other objects). ``lead(n, sync, *args)`` is member 0's side of a call: :func:`claim`, its part,
    :func:`unclaim`; it returns :data:`PARKED` (without doing anything) when a worker sleeps, and
    :meth:`run` then wakes it and calls again. A worker waits for the next call spinning (about 2 ms,
    :data:`IDLE`), then parks, so a training loop's calls need no system call, and an idle team no CPU.

    Parameters
    ----------
    n : int
        Members (``>= 1``; ``1``: no worker thread).
    loop : compiled function
        The workers' loop: ``while wait_call(sync, m): <member m's part of a call>``.
    """

    def __init__(self, n: int, loop):
        self.n = max(int(n), 1)
        self.loop = loop
        self.sync = sync_array(self.n)
        self.bound = self.key = None
        self.workers = []
        self._finalizer = None

    def _bind(self, args: tuple) -> None:
        self.close()
        self.sync = sync_array(self.n)
        self.bound = args
        self.workers = [_Worker(m, self.n, self.sync, self.loop, args) for m in range(1, self.n)]
        self._finalizer = weakref.finalize(self, _stop, self.sync, list(self.workers))

    def run(self, lead, args: tuple, key=None, extra: tuple = ()):
        """Member 0's result of ``lead(n, sync, *args, *extra)`` made with the workers (``extra``: arguments
        of member 0 only; the workers get ``args``). ``key``: a hashable value that changes whenever an
        object of ``args`` does (None: ``args`` are compared object by object). Raises :class:`TeamError`
        when a worker failed (the team is then closed)."""
        if self.n == 1:
            return lead(1, self.sync, *args, *extra)
        if self.bound is None or (key != self.key if key is not None else not _same(args, self.bound)):
            self._bind(args)
            self.key = key
        while True:
            out = lead(self.n, self.sync, *args, *extra)
            if out != PARKED_CODE:
                break
            for w in self.workers:  # wake the parked workers (unless a wake-up is still on its way), call again
                if self.sync[SLOTS + 8 * w.member + 1] == PARKED and w.sent == w.seen:
                    w.sent += 1
                    w.go.release()
            if any(w.error is not None for w in self.workers):
                out = 3
                break
        failed = [w.error for w in self.workers if w.error is not None]
        if failed or self.sync[ABORT]:
            self.close()
            raise TeamError(f"a worker of the compiled kernel's thread team failed: {failed[0]!r}"
                            if failed else "the thread team was aborted") from (failed[0] if failed else None)
        return out

    def close(self) -> None:
        """Stop the worker threads (they finish their current call first)."""
        if self._finalizer is not None:
            self._finalizer()
        self.workers, self.bound, self._finalizer = [], None, None


PARKED_CODE = -1
"""What ``lead`` returns when a worker is parked (nothing was done)."""


def _same(a, b) -> bool:
    """The same arguments for the workers: the same array objects (tuples element by element), equal
    scalars of the same type."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a is b
    return type(a) is type(b) and a == b


def _stop(sync, workers) -> None:
    sync[STOP] = 1
    for w in workers:
        w.go.release()
    for w in workers:
        if w.thread is not threading.current_thread():
            w.thread.join(timeout=5)
