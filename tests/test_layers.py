"""Imports only go down the layers: core -> infrastructure -> tasks -> modes -> main.py.

Each top-level package or module of the project may import only the packages in its row of ALLOWED (its
own modules always). The imports are read from the source (ast), functions' local imports included, so
none can hide from this test.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CORE = {"sde_lib", "data_sources", "datasets", "models", "losses", "samplers"}
INFRASTRUCTURE = {"training", "evaluation"}
ALLOWED = {
    # the core: the science, importing nothing of ours above it
    "sde_lib": set(),
    "data_sources": set(),
    "datasets": {"data_sources"},
    "models": {"sde_lib"},
    "losses": {"sde_lib", "models"},
    "samplers": {"sde_lib"},
    # infrastructure: checkpoints, mesh, writers, errors, files, the loop; metrics and their networks
    "training": CORE,
    "evaluation": CORE | {"training"},
    # what the loop trains, one file each
    "tasks": CORE | INFRASTRUCTURE,
    # the command-line modes, and main.py on top
    "modes": CORE | INFRASTRUCTURE | {"tasks"},
    "main": CORE | INFRASTRUCTURE | {"tasks", "modes"},
    "configs": set(),
}


def project_modules():
    """{top-level name: [python files]} for every package / module of the project but tests and benchmarks."""
    found = {}
    for entry in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, entry)
        if entry.endswith(".py"):
            found[entry[:-3]] = [path]
        elif os.path.isfile(os.path.join(path, "__init__.py")) and entry not in ("tests", "benchmarks"):
            found[entry] = [os.path.join(folder, name) for folder, _, names in os.walk(path)
                            for name in names if name.endswith(".py")]
    return found


def imported_tops(path: str, ours: set[str]) -> set[tuple[str, int]]:
    """(top-level project name, line) of every import in the file, local imports included."""
    tree = ast.parse(open(path).read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in ours}
    return out


def upward_imports(modules=None) -> list[str]:
    modules = modules or project_modules()
    problems = []
    for top, files in modules.items():
        if top not in ALLOWED:
            problems.append(f"{top} has no row in ALLOWED: give it a layer")
            continue
        for path in files:
            for name, line in sorted(imported_tops(path, set(modules))):
                if name not in (top, "configs") and name not in ALLOWED[top]:  # configs: plain data, for all
                    problems.append(f"{os.path.relpath(path, ROOT)}:{line} imports {name}")
    return problems


def test_every_import_goes_down():
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself: a core module importing the loop is reported with its file and line."""
    bad = tmp_path / "bad.py"
    bad.write_text("import jax\n\n\ndef f():\n    from training.loop import train\n")
    modules = project_modules()
    modules["samplers"] = modules["samplers"] + [str(bad)]
    problems = upward_imports(modules)
    assert len(problems) == 1 and problems[0].endswith("bad.py:5 imports training")

