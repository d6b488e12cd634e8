"""Builds and loads the C++ kernel of ``acla/ops/csrc`` (CPU, float32/float64), or says it cannot.

The pure-torch gather needs a dozen elementwise passes over every tap, a sort and a sparse product per
backward. The kernel walks the taps once per query: ``csrc/cpu/gather_kernel.cpp`` (the bilinear gather),
``csrc/cpu/attend_kernel.cpp`` (CLA/ACLA's whole walk, forward, backward and ACLA's inference walk),
``csrc/cpu/taps.h`` (what both share), ``csrc/ops.h`` (the entry points) and ``csrc/bindings.cpp`` (the
Python module). ``acla.ops.custom_ops`` wraps the entry points as ``torch.library`` custom ops.

It is compiled on first use with ``torch.utils.cpp_extension.load`` (a C++ compiler and ninja; once per
torch version and source change, cached under ``~/.cache/torch_extensions``; a compiler error names the
file and line in ``csrc``). Where that fails (no compiler), or with ``ACLA_GATHER_KERNEL=0``, ``load()``
returns None and the pure-torch path runs: same numbers, and nothing beyond pip is ever needed to install
the package.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "csrc"
SOURCE_FILES = ("cpu/gather_kernel.cpp", "cpu/attend_kernel.cpp", "bindings.cpp")


_kernel = None
_tried = False


def _vector_flags() -> list[str]:
    """AVX2 and FMA where this CPU has them (the build is for this machine; its name says which). AVX-512 was tried:
    no faster forward, a slower backward (an A/B of the two builds on 2 threads)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= set(flags) else []


def load():
    """The compiled kernel module, or None where it cannot be built (then the pure-torch path runs)."""
    global _kernel, _tried
    if _tried:
        return _kernel
    _tried = True
    if os.environ.get("ACLA_GATHER_KERNEL", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load as build

        vector = _vector_flags()
        _kernel = build(
            name="acla_ops" + "".join(flag.replace("-m", "_") for flag in vector),
            sources=[str(SOURCES / name) for name in SOURCE_FILES],
            # no trapping math: lets the compiler vectorise the taps' selects (nothing here reads FP exceptions)
            extra_cflags=["-O3", "-fno-trapping-math", "-fopenmp", *vector], extra_ldflags=["-fopenmp"], verbose=False,
        )
    except Exception as error:  # noqa: BLE001 - any build failure means: use the pure-torch path
        warnings.warn(f"acla: the C++ gather kernel could not be built ({type(error).__name__}); "
                      "using the pure-torch path", RuntimeWarning, stacklevel=2)
        _kernel = None
    return _kernel
