"""Builds and loads the C++ kernel of ``acla/ops/csrc`` (CPU, float32/float64), or says it cannot.

The pure-torch gather needs a dozen elementwise passes over every tap, a sort and a sparse product per
backward. The kernel walks the taps once per query: ``csrc/cpu/gather_kernel.cpp`` (the bilinear gather),
``csrc/cpu/attend_kernel.cpp`` (CLA/ACLA's whole walk, forward, backward and ACLA's inference walk),
``csrc/cpu/taps.h`` (what both share), ``csrc/ops.h`` (the entry points) and ``csrc/bindings.cpp`` (the
Python module). ``acla.ops.custom_ops`` wraps the entry points as ``torch.library`` custom ops.

It is compiled on first use with ``torch.utils.cpp_extension.load`` (a C++ compiler and ninja; about a
minute on two cores; a compiler error names the file and line in ``csrc``). Each build lives in its own
folder under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), named by a digest of the
sources, flags and torch version, so two checkouts with different sources never rebuild over each other.
Where the build fails (no compiler), or with ``ACLA_GATHER_KERNEL=0``, ``load()`` returns None and the
pure-torch path runs: same numbers, and nothing beyond pip is ever needed to install the package.

Torch guards a build with a ``lock`` file that a killed build leaves behind, and every later load then
waits on it forever. ``load()`` therefore builds under an OS lock (``fcntl.flock``, released when its holder
dies, however it dies): whoever holds that lock knows a ``lock`` file left in the folder is stale and
removes it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


def _compile_flags() -> list[str]:
    # no trapping math: lets the compiler vectorise the taps' selects (nothing here reads FP exceptions)
    return ["-O3", "-fno-trapping-math", "-fopenmp", *_vector_flags()]


def build_directory() -> Path:
    """Where this source tree's build lives: one folder per digest of every file under ``csrc``, the flags,
    the Python and the torch version."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    digest = hashlib.sha256(f"{sys.implementation.cache_tag}|{torch.__version__}|{' '.join(_compile_flags())}".encode())
    for path in sorted(SOURCES.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(SOURCES).as_posix().encode() + b"\0" + path.read_bytes())
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    return root / f"acla_ops-{digest.hexdigest()[:16]}"


@contextmanager
def _exclusive_build(folder: Path) -> Iterator[None]:
    """Hold the folder's OS lock; torch's ``lock`` file found under it can only be a killed build's."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "acla-build.flock", "w") as handle:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: torch's own lock file is all there is
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = folder / "lock"
            if stale.exists():
                warnings.warn(f"acla: removing {stale}, left by a build that was killed", RuntimeWarning, stacklevel=3)
                stale.unlink()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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

        flags, folder = _compile_flags(), build_directory()
        with _exclusive_build(folder):
            _kernel = build(
                name="acla_ops" + "".join(flag.replace("-m", "_") for flag in _vector_flags()),
                sources=[str(SOURCES / name) for name in SOURCE_FILES],
                extra_cflags=flags, extra_ldflags=["-fopenmp"], build_directory=str(folder), verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - any build failure means: use the pure-torch path
        warnings.warn(f"acla: the C++ gather kernel could not be built ({type(error).__name__}); "
                      "using the pure-torch path", RuntimeWarning, stacklevel=2)
        _kernel = None
    return _kernel
