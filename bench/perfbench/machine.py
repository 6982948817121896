"""bench/perfbench/machine.py: the machine a run ran on, published with its figures."""
import os
import platform
import re
import subprocess
from pathlib import Path

from . import load


def _read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def describe(target_versions):
    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", _read("/proc/meminfo"), re.M)
    os_name = re.search(r'^PRETTY_NAME="?([^"\n]+)', _read("/etc/os-release"), re.M)
    versions = dict(target_versions)
    versions.update(wrk=load.wrk_version(), loadtest=load.loadtest_version(), python=platform.python_version())
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
        if rev and versions.get("perfcgi"):
            versions["perfcgi"] += f" (git {rev})"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"cores": os.cpu_count(), "memory_mib": int(mem.group(1)) // 1024 if mem else None,
            "kernel": platform.release(), "cpu_model": cpu.group(1).strip() if cpu else platform.machine(),
            "os": os_name.group(1) if os_name else platform.system(), "versions": versions}
