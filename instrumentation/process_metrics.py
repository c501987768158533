"""The process's CPU and memory, as the semantic conventions' gauges: sent with every export.

Read on the export thread when an export is made (never on the request path), from the standard
library only: ``time.process_time_ns`` (the CPU time of all the process's threads, user and system,
at nanosecond resolution where ``os.times`` has the clock tick's 10 ms) and, on Linux,
``/proc/self/statm``. Elsewhere memory is not sent: ``resource.getrusage``'s ``ru_maxrss`` is the
peak, not the current size.

The aggregator keeps a ``Mark`` (CPU time, monotonic time) from its start or its last export, and
imports this module at its first export, as it does the SDK's data model.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from tallyhub.wire import CPU_UTILIZATION, MEMORY_USAGE

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import Metric

Mark = tuple[int, int]
"""(``time.process_time_ns()``, ``time.monotonic_ns()``), read together."""


def mark() -> Mark:
    return time.process_time_ns(), time.monotonic_ns()


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one), as the
    semantic conventions count them for ``process.cpu.utilization``."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(0)) or 1
        except OSError:
            pass
    return os.cpu_count() or 1


def cpu_utilization(since: Mark, now: Mark, cpus: int) -> float | None:
    """CPU time between two marks / (their wall time * ``cpus``); None when no time passed."""
    wall_ns = now[1] - since[1]
    if wall_ns <= 0:
        return None
    return max(0, now[0] - since[0]) / (wall_ns * cpus)


def resident_bytes() -> int | None:
    """The resident set size from ``/proc/self/statm`` (its second field, in pages); None where
    there is no such file."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def process_metrics(since: Mark, time_ns: int) -> tuple[list[Metric], Mark]:
    """The gauges ``process.cpu.utilization`` (since ``since``) and ``process.memory.usage`` at
    ``time_ns`` (wall clock), and the mark to measure the next utilization from. No attributes:
    the process's total, as the conventions' ``cpu.mode`` is optional."""
    from opentelemetry.sdk.metrics.export import Gauge, Metric, NumberDataPoint

    now = mark()
    metrics = []
    utilization = cpu_utilization(since, now, cpus_available())
    if utilization is not None:
        point = NumberDataPoint({}, time_ns - (now[1] - since[1]), time_ns, utilization)
        description = "CPU time used since the last export / (elapsed time * CPUs available to the process)."
        metrics.append(Metric(CPU_UTILIZATION, description, "1", Gauge([point])))
    rss = resident_bytes()
    if rss is not None:
        point = NumberDataPoint({}, time_ns, time_ns, rss)
        description = "The amount of physical memory in use (resident set size)."
        metrics.append(Metric(MEMORY_USAGE, description, "By", Gauge([point])))
    return metrics, now
