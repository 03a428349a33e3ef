"""Every Colab badge and install cell names the repository of pyproject.toml's Homepage, and
`webmm-lab colab --repo` moves all of them to a fork."""
import shutil
from pathlib import Path

import pytest

from webmm_lab.cli import main
from webmm_lab.colab import references, repository

ROOT = Path(__file__).resolve().parents[1]


def test_every_badge_and_install_cell_names_the_one_repository():
    repo = repository(ROOT)
    found = references(ROOT)
    assert all(names == {repo} for names in found.values()), {p.name: n for p, n in found.items() if n != {repo}}
    for path in [p for p in found if p.suffix == ".ipynb"]:
        text = path.read_text()
        assert f"colab.research.google.com/github/{repo}/blob/main/" in text, path.name   # its badge
        if "find_spec(\\\"webmm_lab\\\")" in text:
            assert f"git+https://github.com/{repo}" in text, path.name                      # its install cell


def test_colab_command_moves_every_link_to_a_fork(tmp_path, monkeypatch, capsys):
    course = tmp_path / "course"
    for part in ("notebooks", "labs"):
        shutil.copytree(ROOT / part, course / part)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, course / name)
    monkeypatch.chdir(course)
    old = repository(course)
    assert main(["colab", "--repo", "prof-kim/webmm-lab-2027"]) == 0
    assert repository(course) == "prof-kim/webmm-lab-2027"
    assert all(names == {"prof-kim/webmm-lab-2027"} for names in references(course).values())
    assert old not in (course / "notebooks" / "03_image_gpt.ipynb").read_text()
    from webmm_lab.labs import build
    assert build(course / "labs", check=True) == []            # student labs still match their solutions
    with pytest.raises(ValueError, match="OWNER/NAME"):
        main(["colab", "--repo", "not a repo"])
