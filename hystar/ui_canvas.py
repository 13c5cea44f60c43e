"""The sketch canvas in the page: its empty value, and the page-side scripts that clear it and keep the brush ready.

The canvas (gradio's ImageEditor) is never given a value by the server after the page has loaded: in gradio 6.3 the
editor then re-uploads its layers in a loop under a "processing" overlay and ignores new strokes. The page clears it
with the editor's own trash button instead, and picks the brush again, which the trash button leaves unselected.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

CANVAS_ID = "sketch"

# The editor's buttons by their English labels, else by place (labels follow the browser's language).
_BUTTONS = f"""
const root = document.getElementById('{CANVAS_ID}');
const trash = () => root && (root.querySelector("button[aria-label='Clear canvas']")
                             || [...root.querySelectorAll('.top-panel button')].pop());
const brush = () => root && (root.querySelector("button[aria-label='Brush']")
                             || root.querySelector('.toolbar-wrap button'));
const ready = () => {{ const b = brush(); if (b && !b.classList.contains('highlight')) b.click(); }};
"""

# `js` of an event listener: runs in the page before the server's function, and hands its inputs on unchanged.
CLEAR_CANVAS_JS = f"""(...inputs) => {{{_BUTTONS}
const t = trash(); if (t) t.click();
setTimeout(ready, 50); setTimeout(ready, 400);
return inputs.length === 1 ? inputs[0] : inputs;
}}"""

BRUSH_JS = f"""(...inputs) => {{{_BUTTONS}
setTimeout(ready, 50); setTimeout(ready, 400);
return inputs.length === 1 ? inputs[0] : inputs;
}}"""


def blank_canvas(size: int) -> dict[str, Any]:
    """The canvas's value as the page opens: a white square, nothing drawn."""
    return {"background": Image.new("RGB", (size, size), "white"), "layers": [], "composite": None}
