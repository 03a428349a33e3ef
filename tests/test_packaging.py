"""The README's promises about installation: environment.yml and pyproject.toml agree."""
import ast
import re
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;@]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_requirements() -> dict[str, str]:
    """The installed package's requirements (from pyproject.toml), extras included; tomllib
    would need Python 3.11, the course supports 3.10."""
    reqs = [r.split(";")[0] for r in requires("webmm-lab")]
    return {_name(r): r.replace(" ", "") for r in reqs}


def environment_requirements() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    reqs = [l.strip()[2:].strip().strip('"') for l in lines[start + 1:] if l.strip().startswith("- ")]
    return {_name(r): r.replace(" ", "") for r in reqs if not r.startswith("-e")}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert environment_requirements() == pyproject_requirements()


def test_no_exact_pins():
    assert not [r for r in pyproject_requirements().values() if "==" in r]


def test_environment_installs_the_package_itself():
    assert '- -e ".[dev]"' in (ROOT / "environment.yml").read_text()


def _imports(path: Path) -> set[str]:
    """The webmm_lab modules that a package file imports (relative imports resolved)."""
    import ast
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.removesuffix(".__init__") + ".__init__"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:-node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found |= {name} | {f"{name}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n for n in found if n.startswith("webmm_lab")}


def test_dependencies_point_one_way():
    """notebooks -> experiments -> models and data -> core; the lab checks may use any of them
    (their references); the tools (tools/: bench, labs, grading, gradebox, book, colab, report;
    and the cli) sit on top. Data is read, not trained or drawn: data/ imports neither the
    training loop nor the plots."""
    def layer(module: str) -> str:
        part = module.split(".")[1]
        return part if part in ("experiments", "models", "data", "checks") else \
            "tool" if part in ("cli", "tools") else "core"
    allowed = {"core": {"core"}, "data": {"core", "data"}, "models": {"core", "models"},
               "experiments": {"core", "data", "models", "experiments"},
               "checks": {"core", "data", "models", "experiments", "checks"}}
    for path in (ROOT / "webmm_lab").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if layer(module) == "tool" or module == "webmm_lab.__init__":
            continue
        for imported in _imports(path):
            if imported in ("webmm_lab", "webmm_lab.__init__") or imported.count(".") == 0:
                continue
            assert imported.split(".")[1] != "cli", f"{module} imports the command line"
            assert layer(imported) in allowed[layer(module)], f"{module} ({layer(module)}) imports {imported}"
            if layer(module) == "data":
                assert imported not in ("webmm_lab.train", "webmm_lab.plots"), f"{module} imports {imported}"


def test_every_torch_module_lives_in_models():
    """A newcomer finds every network in models/: no nn.Module subclass anywhere else."""
    outside = []
    for path in (ROOT / "webmm_lab").rglob("*.py"):
        if path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("nn.Module", "torch.nn.Module", "Module")
                                                      for b in node.bases):
                outside.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not outside, "move these into webmm_lab/models/: " + "; ".join(outside)


def test_modules_and_functions_stay_short():
    """Files that read like nanoGPT's: no module over 450 lines, no function over 80 (its
    signature and docstring included)."""
    long = []
    for path in (ROOT / "webmm_lab").rglob("*.py"):
        source = path.read_text()
        name = path.relative_to(ROOT)
        if source.count("\n") > 450:
            long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{name}: {node.name}() is {node.end_lineno - node.lineno + 1} lines")
    assert not long, "split these: " + "; ".join(long)
