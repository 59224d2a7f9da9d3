"""How this process's C allocator treats freed memory: kept for the next step, not handed back.

PyTorch's CPU tensors come from glibc's malloc, which maps every block above its mmap threshold (32 MB
at most) afresh and unmaps it on free. A training or scoring step allocates and frees the same large
buffers every time (the logits of 8 x 512 tokens over a 32,000-token vocabulary: 262 MB in bf16), so
each step page-faults them in again, a page at a time. Measured on a 2-core Sapphire Rapids VM: a
4096 x 512 x 32,000 bf16 matmul ran at 900 GFLOP/s into a fresh output and at 1,850 into a reused one;
the bench model's bf16 training step took 1.59 s against 1.48 s with freed memory kept, HellaSwag
scoring 10.7 s against 9.7 s.

`keep_freed_memory` makes malloc serve every block from its heap and keep up to KEEP_BYTES of freed
memory at its top, as PyTorch's own CPU launcher (`torch.backends.xeon.run_cpu`) does with jemalloc set
never to return memory. The cost is resident memory: it stays near its peak instead of shrinking between
steps, and the heap holds freed blocks it cannot reuse for the next request (PyTorch pads each for
alignment) until neighbours free up beside them: the bench model's bf16 training held 2.33 GB from the
tenth step on (flat to the 70th), against 1.9 GB; HellaSwag scoring peaked at 835 MB against 773; a loop
that allocates one 256 MB buffer a step settles at 1.0 or 2.3 GB. Native code that reads memory it
never wrote now sees old bytes where fresh pages gave it zeros: fastText's training does, so it runs in
a process of its own (data/filters/classifier.py).

So the command line sets it for the commands that run model steps (`train`, `finetune`, `quickstart`,
`eval`, `generate`, `quantize`, `scaling run`, `thesis`), not for `serve`, whose memory should shrink
back after a burst of requests, nor for `data` and `tokenizer`, whose native readers gain nothing. A user
who sets glibc's malloc variables (`MALLOC_TRIM_THRESHOLD_=0`, `GLIBC_TUNABLES`) or preloads another
allocator keeps what they chose. No torch here: the command line imports this at every start.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's <malloc.h>
KEEP_BYTES = 1 << 30  # freed memory at the top of the heap kept for reuse before any is returned
FRESH_BYTES = 128 << 10  # glibc's initial mmap threshold
MMAP_MAX = 65536  # glibc's default number of mapped blocks
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Keep freed memory in this process for reuse (glibc only); whether the setting was made.

    Nothing changes where the C library is not glibc (macOS, musl), where another allocator is
    preloaded, or where the user set glibc's own malloc variables.
    """
    mallopt = None if _user_chose() else _mallopt()
    # mallopt returns 1 on success. No block is mapped on its own, so every freed one can be reused.
    return (
        mallopt is not None and bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    )


def keep_large_blocks_fresh() -> bool:
    """Have malloc map every new block of FRESH_BYTES or more afresh, pages the kernel zeroes (glibc
    only); whether the setting was made.

    For native code that reads memory it never wrote (fastText's training, see
    data/filters/classifier.py), in a process of its own: blocks freed before the call stay in the heap.
    """
    mallopt = _mallopt()
    return (
        mallopt is not None
        and bool(mallopt(M_MMAP_MAX, MMAP_MAX))
        and bool(mallopt(M_MMAP_THRESHOLD, FRESH_BYTES))
    )


def _mallopt():
    """glibc's mallopt, or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return getattr(ctypes.CDLL(None), "mallopt", None)


def _user_chose() -> bool:
    preloaded = os.environ.get("LD_PRELOAD", "")
    return (
        any(name in os.environ for name in USER_SETTINGS)
        or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
        or any(name in preloaded for name in ("jemalloc", "tcmalloc", "mimalloc"))
    )
