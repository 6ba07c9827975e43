"""The worker's memory: the limit it may use (cgroup or machine) and giving freed heap pages back."""
from __future__ import annotations

import ctypes

import psutil


def available_memory() -> int:
    """Bytes of memory this process may use: the cgroup limit when set, else the machine's total."""
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            return int(raw)
    return total


def memory_fraction() -> float:
    """This process's resident memory as a share of ``available_memory``."""
    return psutil.Process().memory_info().rss / available_memory()


def trim_memory() -> None:
    """Give the C heap's free pages back to the system (glibc): a load or a drain leaves tens of megabytes
    of freed documents there, which RSS would otherwise keep counting. A no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
