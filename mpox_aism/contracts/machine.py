"""What machine a measurement was taken on: every benchmark's JSON carries it.

Torch-free on purpose: the soak and API benchmarks measure the ONNX Runtime daemon, and importing
torch to print a host name would put a gigabyte of it into the very process being measured. Torch's
thread count and GPU are reported only when the measuring process has already loaded torch.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    hostname: str
    cpu: str
    cpu_count: int | None
    python: str
    platform: str
    torch_threads: int | None = None  # None: torch not loaded by the measuring process
    gpu: str | None = None


def describe_machine() -> Machine:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads, gpu = None, None
    torch = sys.modules.get("torch")
    if torch is not None:
        threads = torch.get_num_threads()
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return Machine(hostname=socket.gethostname(), cpu=cpu, cpu_count=os.cpu_count(), python=platform.python_version(),
                   platform=platform.platform(), torch_threads=threads, gpu=gpu)
