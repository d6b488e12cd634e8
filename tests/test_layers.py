"""The package's structure as a contract: its import layers (pyproject.toml, import-linter) and C++ kept in files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import acla
from acla.ops import extension

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(acla.__file__).resolve().parent


def test_the_import_layers_of_pyproject_hold() -> None:
    """No module imports from a layer above its own (function-level imports included), figures take the tables
    from tables.py, and training and evaluation do not import each other."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert command, "import-linter is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run([command, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


def test_the_kernel_is_built_from_its_cpp_files_and_no_python_holds_cpp() -> None:
    for name in extension.SOURCE_FILES:
        assert (extension.SOURCES / name).is_file(), name
    holding_cpp = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                   if "#include <torch" in path.read_text()]
    assert not holding_cpp, holding_cpp


def test_no_module_of_acla_imports_itself_back() -> None:
    """No import cycle, function-level imports included (the layers allow cycles inside one layer; this does not)."""
    import grimp  # import-linter's graph builder

    graph = grimp.build_graph("acla", cache_dir=None)
    cycles = sorted({tuple(sorted((module, imported))) for module in graph.modules
                     for imported in graph.find_modules_directly_imported_by(module)
                     if graph.chain_exists(importer=imported, imported=module)})
    assert not cycles, cycles
