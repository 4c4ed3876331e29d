"""The package's shape: no import loops, the command line apart from the library, and a wheel that
works when installed (not editable) and run from any folder."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sknet"


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside functions.

    ``from .x import y`` counts as importing ``x.y`` when that is a module, else ``x``. The
    implicit import of a module's parent packages is not an edge (it is always there).
    """
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    top = package.name
    graph = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
                target = ".".join(p for p in (base, node.module or "") if p)
                edges |= {f"{target}.{a.name}" if f"{target}.{a.name}" in files else target for a in node.names}
        graph[name] = {e for e in edges if e in files and e != name and e.split(".")[0] == top}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import loop a depth-first walk meets, as ``[a, b, ..., a]``."""
    cycles, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycles.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return cycles


def test_the_cycle_finder_sees_a_loop_through_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from ..b import g\n    return g\n")
    (pkg / "b.py").write_text("from .sub import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.a"}
    assert find_cycles(graph) == [["pkg.b", "pkg.sub.a", "pkg.b"]]


def test_no_import_loops_in_the_package():
    graph = import_graph(PACKAGE)
    assert len(graph) > 40 and graph["sknet.cli"] >= {"sknet.cli.train", "sknet.cli.analyze"}
    assert find_cycles(graph) == []


def _calls_and_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (("import", a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "import", node.module or ""
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            yield "call", node.func.id


@pytest.mark.parametrize("what", [("import", "argparse"), ("call", "print")])
def test_only_the_command_line_parses_flags_and_prints(what):
    library = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1]]
    offenders = [str(p.relative_to(ROOT)) for p in library if what in set(_calls_and_imports(p))]
    assert not offenders, f"{what[1]} outside src/sknet/cli/: {offenders}"
    cli = [p for p in (PACKAGE / "cli").glob("*.py") if what in set(_calls_and_imports(p))]
    assert cli  # the check looks at the right things


def test_recipes_are_found_by_name_or_path(tmp_path, capsys):
    from sknet.cli import main
    from sknet.training import list_recipes, recipe_path, resolve_config

    assert {"fashion_mnist", "imagenet_sknet50", "imagenet_light", "cifar_sknet29", "study", "study_cpu"} <= set(
        list_recipes()
    )
    assert recipe_path("fashion_mnist").parent == PACKAGE / "recipes"
    own = tmp_path / "mine.yaml"
    own.write_text("model: resnext_mini\nepochs: 2\n")
    assert resolve_config(own).model == "resnext_mini"
    with pytest.raises(FileNotFoundError, match="packaged recipes: .*fashion_mnist"):
        resolve_config("fashion_mnst")
    assert main(["recipes"]) == 0 and "imagenet_sknet50" in capsys.readouterr().out
    assert main(["recipes", "cifar_sknet29"]) == 0 and "lr_milestones: [150, 225]" in capsys.readouterr().out


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_folder(tmp_path):
    """Built with ``pip wheel``, installed into a fresh virtual environment (not editable; torch and
    the other dependencies come from this one), run from a folder outside the repository."""
    build = tmp_path / "src_copy"
    for name in ("pyproject.toml", "README.md"):
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "src"), str(build / "src")], check=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(build)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("sknet-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    Path(purelib, "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str) -> str:
        proc = subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    assert run(str(python), "-c", "import sknet; print(sknet.__file__)").startswith(purelib)
    assert "usage: sknet study" in run(str(venv / "bin" / "sknet"), "study", "--help")
    assert "fashion_mnist" in run(str(python), "-m", "sknet", "recipes")
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    out = run(str(venv / "bin" / "sknet"), "train", "--config", "fashion_mnist", "--max-steps", "3", "--output", "run",
              "--no-progress")  # fmt: skip
    assert "epochs / steps           | 0 / 3" in out
    assert (elsewhere / "run" / "model.safetensors").is_file()
