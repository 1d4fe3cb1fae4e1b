"""What the CPU can do fast, from the ``flags`` line of ``/proc/cpuinfo`` (Linux, x86).

Torch's int8 products and bfloat16 autocast have fast CPU kernels only where
the instructions exist; elsewhere they fall back to far slower code (on an
AVX2-only AMD EPYC: int8 products 60 times the float32 time, a bfloat16
training step about 7 times).
"""
from __future__ import annotations

from pathlib import Path

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products (VNNI, AMX)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")                   # bfloat16 dot products


def _field(name: str, cpuinfo: str | None) -> str | None:
    """The first ``name : value`` of ``/proc/cpuinfo`` (or the text given); None where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_has(flags: tuple[str, ...], cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU has any of ``flags``; None where that cannot be told (not Linux, not x86)."""
    present = _field("flags", cpuinfo)
    return None if present is None else any(flag in present.split() for flag in flags)


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's model name (``AMD EPYC``, ``Intel(R) Xeon(R) ...``); None where it cannot be read."""
    return _field("model name", cpuinfo)
