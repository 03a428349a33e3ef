import ipywidgets as widgets

from webmm_lab.interact import live


def test_live_renders_now_and_again_on_every_change(capsys):
    seen = []

    def render(x, word):
        seen.append((x, word))
        if word == "bad":
            raise ValueError("unknown word 'bad'")
        print(f"x={x} word={word}")

    slider, box = widgets.FloatSlider(value=0.5), widgets.Text(value="a")
    live(render, x=slider, word=box)
    assert seen == [(0.5, "a")] and "x=0.5 word=a" in capsys.readouterr().out
    slider.value = 0.7
    box.value = "bad"                        # a ValueError is shown to the user, not raised
    assert seen[1:] == [(0.7, "a"), (0.7, "bad")]
