"""OpenBLAS thread control for numeric work in small pieces (disclosure control, impact
estimates). OpenBLAS's threads cost more than they save on matrices of a few hundred rows,
and far more on a busy machine (a disclosure system: 0.11 s against 0.018 s per
factorisation) or when two processes share the two cores (the impact estimates of a
116,000-row panel took longer on two processes than on one). Best effort: the OpenBLAS
libraries bundled with numpy and scipy expose a getter and a setter; anything else runs
unchanged.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager


def _openblas_threads() -> list[tuple]:
    """(setter, current thread count) of each OpenBLAS library loaded in this process."""
    found = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            libraries = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
        for library in libraries:
            handle = ctypes.CDLL(library)
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    get = getattr(handle, f"{prefix}_get_num_threads{suffix}", None)
                    set_ = getattr(handle, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        found.append((set_, get()))
                        break
                else:
                    continue
                break
    except OSError:
        pass
    return found


# The thread counts each ``single_threaded_blas`` block replaced, outermost first (a nested
# block replaces the outer block's one thread).
_REPLACED: list[list[tuple]] = []


@contextmanager
def single_threaded_blas():
    """Run the block's BLAS and LAPACK calls on one thread, then restore the thread counts."""
    found = _openblas_threads()
    for set_, _ in found:
        set_(1)
    _REPLACED.append(found)
    try:
        yield
    finally:
        _REPLACED.pop()
        for set_, threads in found:
            set_(threads)


@contextmanager
def blas_threads_as_before():
    """Inside ``single_threaded_blas``: the thread counts the outermost such block replaced,
    for one large piece of work that nothing else runs beside (one thread again after the
    block). Elsewhere: as is."""
    found = _REPLACED[0] if _REPLACED else []
    for set_, threads in found:
        set_(threads)
    try:
        yield
    finally:
        for set_, _ in found:
            set_(1)


def use_one_blas_thread() -> None:
    """One BLAS thread for the rest of this process (a worker process doing small pieces)."""
    for set_, _ in _openblas_threads():
        set_(1)
