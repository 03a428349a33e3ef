import ipywidgets as widgets
import pytest

from webmm_lab.interact import live


def test_live_renders_now_and_again_on_every_change(capsys):
    seen = []

    def render(x, word):
        seen.append((x, word))
        if word == "bad":
            raise ValueError("unknown word 'bad'")
        print(f"x={x} word={word}")

    slider, box, pick = widgets.FloatSlider(value=0.5), widgets.Text(value="a"), widgets.Dropdown(options=[1, 2])
    assert slider.continuous_update and box.continuous_update      # ipywidgets' default: every drag step
    live(lambda x, word, n: render(x, word), x=slider, word=box, n=pick)
    assert not slider.continuous_update and not box.continuous_update   # now: on release, on Enter
    assert seen == [(0.5, "a")] and "x=0.5 word=a" in capsys.readouterr().out
    slider.value = 0.7
    box.value = "bad"                        # a ValueError is shown to the user, not raised
    assert seen[1:] == [(0.7, "a"), (0.7, "bad")]


IPYWIDGETS_7 = """
import ipywidgets as widgets
assert widgets.__version__.startswith("7."), widgets.__version__
from webmm_lab.interact import live
seen = []
def render(x, word):
    seen.append((x, word))
    if word == "bad":
        raise ValueError("unknown word 'bad'")
slider, box = widgets.FloatSlider(value=0.5), widgets.Text(value="a")
area = live(render, x=slider, word=box)
assert not slider.continuous_update and not box.continuous_update
slider.value = 0.7
box.value = "bad"
assert seen == [(0.5, "a"), (0.7, "a"), (0.7, "bad")], seen
assert isinstance(area, widgets.Output)
print("ipywidgets", widgets.__version__, "ok")
"""


@pytest.mark.slow
def test_live_works_with_ipywidgets_7_as_colab_ships_it(tmp_path):
    """Colab ships ipywidgets 7.x: `live` must work there too. ipywidgets 7 is installed into a
    folder of its own (from the package registry) and imported ahead of the installed 8."""
    import subprocess
    import sys

    target = tmp_path / "w7"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          "ipywidgets>=7.6,<8", "ipython_genutils"], capture_output=True, text=True, timeout=300)
    if pip.returncode != 0:
        pytest.skip(f"ipywidgets 7 could not be installed here (offline?): {pip.stderr.strip()[-200:]}")
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", IPYWIDGETS_7], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ipywidgets 7." in run.stdout
