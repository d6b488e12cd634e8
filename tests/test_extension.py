"""The C++ kernel's build: a killed build must not leave every later load waiting forever."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import skip_without_kernel


def test_a_lock_left_by_a_killed_build_is_removed_and_the_kernel_loads(tmp_path: Path) -> None:
    skip_without_kernel()
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    folder = Path(subprocess.run([sys.executable, "-c", "from acla.ops import extension; print(extension.build_directory())"],
                                 env=env, capture_output=True, text=True, check=True).stdout.strip())
    assert folder.parent == tmp_path
    folder.mkdir()
    (folder / "lock").touch()  # what torch's build leaves when it is killed: torch alone would wait on it forever
    # a fresh build takes about a minute on two cores; a hang is what the timeout catches
    done = subprocess.run([sys.executable, "-W", "always", "-c",
                           "from acla.ops import extension; assert extension.load() is not None"],
                          env=env, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stderr
    assert "left by a build that was killed" in done.stderr
    assert not (folder / "lock").exists()
    assert list(folder.glob("acla_ops*.so"))
