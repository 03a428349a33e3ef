"""The README's promises about installation: environment.yml and pyproject.toml agree."""
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
