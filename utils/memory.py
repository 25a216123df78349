"""Process-wide memory settings for the CPU loops: the allocator that keeps what a
training or fitting step frees for the next step."""

from __future__ import annotations

import sys

__all__ = ["CHUNK_BYTES", "allocator_setting", "graphs_per_chunk", "keep_freed_memory"]

#: glibc's largest mmap threshold: blocks above it are always mapped afresh and unmapped.
MMAP_CEILING = 1 << 25

#: The largest intermediate tensor a chunked CPU computation should allocate: half of
#: :data:`MMAP_CEILING`, so malloc serves it from heap memory freed by
#: the chunk before instead of fresh pages that fault in (NG-T at reference size: 7.1
#: million page faults and 42 s of system time a training step unchunked, 15 thousand and
#: 0.2 s in chunks of this size).
CHUNK_BYTES = MMAP_CEILING // 2

_KEPT: dict[int, int] = {}  # threshold set in this process, if any (process-wide, like mallopt)


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed blocks (up to ``threshold_bytes``) for reuse instead
    of unmapping them: fitting and training loops allocate the same tensors every step,
    and with glibc's defaults each large one is a fresh ``mmap`` whose pages fault in
    again, which costs as much system time as the computation itself on CPU. Bounded, not
    unlimited: blocks above 32 MiB are still mapped and unmapped, and at most
    ``threshold_bytes`` of free heap is kept (keeping every freed block let one NG-T step
    grow to 24 GB). Process-wide, like ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_``; returns False (and changes nothing) where the C library is
    not glibc."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    kept = bool(mallopt(m_mmap_threshold, min(threshold_bytes, MMAP_CEILING))
                and mallopt(m_trim_threshold, threshold_bytes))
    if kept:
        _KEPT[0] = threshold_bytes
    return kept


def allocator_setting() -> str:
    """The allocator setting of this process in words, for run headers."""
    if not _KEPT:
        return "allocator defaults"
    kept = _KEPT[0]
    return (f"glibc keeps freed blocks (mmap threshold {min(kept, MMAP_CEILING) >> 20} MiB, "
            f"trim threshold {kept >> 20} MiB)")


def graphs_per_chunk(bytes_per_graph: int, graphs: int, device_type: str,
                     budget: int = CHUNK_BYTES) -> int:
    """How many of ``graphs`` independent graphs one chunk of a computation should hold so
    that its largest tensor (``bytes_per_graph`` a graph) stays within ``budget`` bytes:
    at least one, and all of them off the CPU (CUDA's caching allocator reuses memory
    itself, and smaller kernels would only cost launches)."""
    if device_type != "cpu":
        return max(graphs, 1)
    return max(1, min(graphs, budget // max(bytes_per_graph, 1)))
