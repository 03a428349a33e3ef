"""Controls a person can play with, that still run headless.

    live(lambda temperature, prompt: print(sample(prompt, temperature)),
         temperature=widgets.FloatSlider(0.8, min=0, max=1.5), prompt=widgets.Text("The import"))

`live` calls `render` once with the controls' starting values, straight into the cell (the
static result that a stored notebook, nbval and a headless run show), then displays the
controls above an output area that `render` fills again at once on every change. Sliders and
text boxes report a change when released (or on Enter), not at every step of a drag or key:
`live` sets `continuous_update=False` on every control that has it, so a slow `render` runs once
per choice.
"""
from __future__ import annotations

from typing import Callable


def live(render: Callable[..., None], title: str = "", **controls):
    """Show `controls` (ipywidgets, keyed by `render`'s argument names) and re-run
    `render(**values)` into an output area whenever one changes (sliders and text boxes on
    release: `continuous_update=False` is set on each); `render` also runs once, now, into the
    cell. Errors that `render` raises as ValueError are printed, not raised (a caption with an
    unknown word is the user's to fix). Returns the output widget."""
    import ipywidgets as widgets
    from IPython.display import display

    def run() -> None:
        values = {name: control.value for name, control in controls.items()}
        try:
            render(**values)
        except ValueError as e:
            print(f"{type(e).__name__}: {e}")

    print(title or "static result for the starting values (with a live kernel, the controls below redo it):")
    run()
    area = widgets.Output()

    def on_change(_change) -> None:
        area.clear_output(wait=True)
        with area:
            run()
            import matplotlib.pyplot as plt
            plt.show()

    for control in controls.values():
        if control.has_trait("continuous_update"):
            control.continuous_update = False       # a drag or a word typed is one change, not many
        control.observe(on_change, names="value")
    display(widgets.VBox(list(controls.values()) + [area]))
    return area
