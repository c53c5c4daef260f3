"""The machine line a benchmark prints under its table: CPU model, cores, torch threads, the
versions that matter to it, and the load average at the end (a busy machine makes timings
worthless, so the line says how busy it was). Imported by the scripts beside it (a script's own
folder is on sys.path when it runs)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def describe(*versions: str) -> str:
    """'CPU, N logical cores, torch V (T threads)[, versions...]; load average at the end a, b, c'."""
    import torch

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    extra = "".join(f", {v}" for v in versions)
    return (f"{cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){extra}; load average at the end {load}")
