"""The limits on the code's layout that the import contracts do not cover (README: How it works)."""
import ast
import re
import subprocess
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jobflow"
MAX_MODULE_LINES = 400
MAX_FLAT_MODULES = 10


def python_files(*folders: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *folders],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / name for name in listed if name.endswith(".py") and (ROOT / name).exists()]


def cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over every module and package."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_at_any_level_counting_imports_inside_functions_and_the_root_package():
    graph = grimp.build_graph("jobflow", include_external_packages=False)
    assert len(graph.modules) > 50
    assert cycles(graph) == []


def test_no_product_module_is_longer_than_400_lines():
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in python_files("jobflow")}
    assert len(lengths) > 50
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def test_at_most_ten_modules_sit_flat_under_the_package():
    flat = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert "__init__.py" in flat and len(flat) <= MAX_FLAT_MODULES, flat


def test_product_names_need_no_renaming_on_import():
    """A name that had to be renamed wherever it is imported should have been named better (numpy's np aside)."""
    renamed = [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name} as {alias.asname}"
               for path in python_files("jobflow") for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in node.names if alias.asname and (alias.name, alias.asname) != ("numpy", "np")]
    assert renamed == []


def test_no_file_edits_the_import_path():
    edit = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\s*[+]?=")
    editing = [str(path.relative_to(ROOT)) for path in python_files(".") if edit.search(path.read_text())]
    assert editing == []


def test_no_test_helper_is_defined_twice():
    """Helpers live once, in tests/support/: a module-level function or class that is neither a test nor a
    fixture is defined in one file only."""
    places: dict[str, list[str]] = {}
    for path in python_files("tests"):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if node.name.startswith(("test_", "Test")) or any("fixture" in ast.unparse(d) for d in node.decorator_list):
                continue
            places.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert len(places) > 10
    assert {name: files for name, files in places.items() if len(files) > 1} == {}
