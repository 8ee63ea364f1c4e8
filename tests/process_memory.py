"""Peak memory of a process on Linux, for tests that bound what a hostile input may cost.

``reset_peak(pid)`` clears the kernel's high-water mark (``/proc/PID/clear_refs``), so the next
``peak_rss(pid)`` is the peak since then, not since the process started.
"""

from pathlib import Path


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int | str = "self") -> int:
    """Reset the process' peak RSS to its current RSS; return that RSS in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss(pid)


def rss(pid: int | str = "self") -> int:
    """The process' resident set size now, in bytes."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss(pid: int | str = "self") -> int:
    """The process' peak resident set size since the last reset, in bytes."""
    return _status_kib(pid, "VmHWM") * 1024
