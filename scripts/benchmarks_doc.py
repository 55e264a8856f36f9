"""docs/BENCHMARKS.md is shared by every bench script: each one replaces only its own section."""
from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from facedeblur.image_files import write_bytes_atomic  # noqa: E402

DOC = REPO / "docs" / "BENCHMARKS.md"


def cpu_name() -> str:
    """The CPU's model name, so that every benchmark names the machine it ran on alike."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine a benchmark ran on, as its section states it: CPU model and core count."""
    return f"{cpu_name()}, {os.cpu_count()} cores"


def replace_section(text: str, heading: str, section: str) -> str:
    """Swap the section starting at `heading` (up to the next '## ' heading) for `section`, or append it."""
    section = section.rstrip("\n") + "\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda match: section + ("\n" if match.end() < len(text) else ""), text, count=1)
    return (text or "# Benchmarks\n").rstrip("\n") + "\n\n" + section


def write_section(heading: str, section: str) -> None:
    """Replace (or append) one section of docs/BENCHMARKS.md atomically; other sections stay as they are."""
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(DOC, replace_section(current, heading, section).encode())
