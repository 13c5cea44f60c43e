"""The Gradio app: query inputs on the left, base vs adapted results and the two views on the right.

All the work is done by `hystar.service.SearchService`; this module lays it out and turns every bad input into
a short warning (a toast and the status line), never a traceback.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .defaults import CONCURRENCY
from .images import MAX_BYTES, ImageError, open_image
from .io import temp_path
from .paths import EXAMPLES_DIR
from .service import MAX_K, GalleryIndexingError, Query, QueryError, Result, SearchResponse, SearchService
from .ui_canvas import BRUSH_JS, CANVAS_ID, CLEAR_CANVAS_JS, blank_canvas
from .ui_text import (
    NO_GALLERY,
    TITLE,
    caption,
    details,
    guess_button,
    guesses_text,
    header,
    indexing_line,
    name_prior_info,
    online_line,  # noqa: F401 - part of this module's interface, as before
    rerank_info,
    status_line,
)
from .views import DELTA_HELP, UMAP_HELP, delta_figure, umap_figure

log = logging.getLogger(__name__)

READY = "Draw, upload or type, then **Search**."
GUESS_BUTTONS = 3
OUTPUTS = 7 + 2 + GUESS_BUTTONS     # what a search sets: status … paths, then the guesses' line, buttons and names
EXAMPLE_KINDS = {"sketch": "sketch", "painting": "painting", "lowres": "low-res shot"}
SIDE_BY_SIDE, ALONE = 3, 6          # result columns per gallery with and without the adapted side
CSS = """
#status { min-height: 2.2em; }
#examples .caption-label { font-size: 0.75em; }
#base-results .caption-label, #adapted-results .caption-label {
  white-space: normal; overflow: visible; text-overflow: clip; font-size: 0.75em; line-height: 1.15; }
"""


@dataclass(frozen=True)
class UiConfig:
    title: str = TITLE
    k: int = 12
    canvas: int = 512                 # square canvas, in pixels
    brush: int = 6
    concurrency: int = CONCURRENCY    # searches running at once; the rest wait in the queue
    queue_size: int = 32
    examples: Path = EXAMPLES_DIR


# ---------------------------------------------------------------------------------------------- timer

def make_tick(service: SearchService, title: str):
    """The timer's refresh while the gallery is indexed; once it is ready, the header, the re-rank box and the UMAP
    view too, and the timer stops once the UMAP view has appeared (or will not)."""
    def tick():
        status = service.indexing_status()
        if not status.ready and not status.error:
            return indexing_line(service), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        rerank = gr.Checkbox(interactive=service.can_rerank, info=rerank_info(service))
        waiting = service.umap_state in ("loading", "fitting")
        return (indexing_line(service), header(service, title), rerank, umap_view(service, None),
                gr.Timer(active=waiting))

    return tick


# ---------------------------------------------------------------------------------------------- figures

def delta_view(service: SearchService, response: SearchResponse | None) -> Any:
    if not service.can_adapt:
        return delta_figure([], [], "style adaptation is unavailable: no trained adapter")
    if response is None:
        return delta_figure([], [], "search with a sketch or an image to see how Hystar adapts the encoder")
    if response.adapted is None:
        return delta_figure([], [], "style adaptation is off")
    return delta_figure(response.explanations, response.offsets)


def umap_view(service: SearchService, response: SearchResponse | None) -> Any:
    projection = service.umap_map()
    if projection is None:
        return umap_figure(None, None, service.umap_waiting_note)
    return umap_figure(projection, response.placement if response is not None else None)


def guess_outputs(response: SearchResponse | None) -> tuple:
    """The guesses' line, one button per guess (the rest hidden), and the guessed names (for the buttons)."""
    guesses = [] if response is None else response.guesses
    buttons = [gr.Button(guess_button(guesses[i]), visible=True) if i < len(guesses) else gr.Button(visible=False)
               for i in range(GUESS_BUTTONS)]
    return (gr.Markdown(guesses_text(response), visible=bool(guesses)), *buttons, [g.name for g in guesses])


# ---------------------------------------------------------------------------------------------- handlers

class QueryFiles:
    """Where a query image may come from: gradio's upload folder, the results the app has shown (a click on one
    searches it) and the examples. The API takes file payloads that name a path, and gradio vets only some forms of
    them (a payload without its `meta`, or a bare string, reaches the listener as it is); a search never opens
    another file of the server by its name, nor says whether one exists."""

    def __init__(self, folders: list[Path], files: list[Path]):
        self.folders = [Path(os.path.realpath(folder)) for folder in folders]
        self.files = {Path(os.path.realpath(path)) for path in files}

    @classmethod
    def of_app(cls, served: ResultFiles, examples: list[tuple[str, str]]) -> QueryFiles:
        from gradio.utils import get_upload_folder

        return cls([Path(get_upload_folder()), served.folder], [Path(path) for path, _ in examples])

    def __call__(self, path: Any) -> str | None:
        if path is None or path == "":
            return None
        real = Path(os.path.realpath(str(path)))
        if real in self.files or any(real.is_relative_to(folder) for folder in self.folders):
            return str(path)
        raise QueryError("images are taken from uploads only, never from a path on the server")


def _file(payload: Any, readable: QueryFiles) -> str | None:
    """The path of an uploaded file, as the search listeners receive it (not preprocessed, see `build_app`)."""
    if isinstance(payload, dict):
        return readable(payload.get("path"))
    return readable(payload)


def _canvas(editor: Any, readable: QueryFiles) -> str | None:
    """The flattened canvas of an ImageEditor payload (the background when nothing was drawn on it)."""
    if isinstance(editor, dict) and ("composite" in editor or "background" in editor):
        return _file(editor.get("composite"), readable) or _file(editor.get("background"), readable)
    return _file(editor, readable)


def _number(value: Any, name: str) -> float:
    """A weight or k as the API sent it, as a finite float; anything else is refused in one line."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise QueryError(f"{name} must be a finite number, not {str(value)[:40]!r}")
    return number


def _text(value: Any, name: str) -> str:
    if value is not None and not isinstance(value, str):
        raise QueryError(f"{name} must be a string, not {type(value).__name__}")
    return value or ""


def _gallery(results: list[Result] | None, served: ResultFiles) -> list[tuple[str, str]]:
    return [(served(r.path), caption(r)) for r in results or []]


def make_search(service: SearchService, served: ResultFiles, readable: QueryFiles | None = None):
    readable = readable or QueryFiles.of_app(served, example_files(EXAMPLES_DIR))

    def search(sketch, image, text, negative, sketch_weight, image_weight, text_weight, negative_weight,
               adapt, rerank, k, online=False, expand=True, name_prior=True, request: gr.Request = None):
        try:
            query = Query(sketch=_canvas(sketch, readable), image=_file(image, readable), text=_text(text, "text"),
                          negative=_text(negative, "negative text"),
                          sketch_weight=_number(sketch_weight, "sketch weight"),
                          image_weight=_number(image_weight, "image weight"),
                          text_weight=_number(text_weight, "text weight"),
                          negative_weight=_number(negative_weight, "negative weight"), k=int(_number(k, "top-k")),
                          adapt=bool(adapt), rerank=bool(rerank), expand=bool(expand), online=bool(online),
                          name_prior=bool(name_prior))
            response = service.search(query, user=_user(request))
            base, adapted = _gallery(response.base, served), _gallery(response.adapted, served)
        except GalleryIndexingError as error:  # not a fault: the gallery is being indexed
            gr.Info(str(error), duration=4)
            return (str(error),) + (gr.skip(),) * (OUTPUTS - 1)
        except (QueryError, ImageError) as error:
            return _warn(str(error))
        except Exception:  # noqa: BLE001 - logged here; the user gets one line, never a traceback
            log.exception("search failed")
            return _warn("the search failed on the server; try another query")
        paths = {"base": [path for path, _ in base], "adapted": [path for path, _ in adapted]}
        side_by_side = response.adapted is not None
        return (status_line(response),
                gr.Gallery(value=base, columns=SIDE_BY_SIDE if side_by_side else ALONE),
                gr.Gallery(value=adapted, visible=side_by_side),
                delta_view(service, response), umap_view(service, response), details(response), paths,
                *guess_outputs(response))

    return search


def _user(request: gr.Request | None) -> str | None:
    """Whose online session: the Gradio session (one per browser tab, one per API client)."""
    return getattr(request, "session_hash", None) if request is not None else None


def make_add(service: SearchService, title: str):
    """Uploaded photos and .zip archives into the app-owned gallery (all the work is `SearchService.add_photos`)."""
    def add(files, progress=gr.Progress()):  # noqa: B008 - how Gradio hands a handler its progress bar
        paths = [f.get("path") if isinstance(f, dict) else f for f in files or []]
        progress(0, desc="copying the photos")

        def indexed(done: int, total: int) -> None:
            progress((done, total), desc=f"indexing the added photos: {done} / {total}", unit="images")

        try:
            report = service.add_photos([path for path in paths if path], indexed)
        except QueryError as error:
            gr.Warning(str(error), duration=6)
            return f"⚠ {error}", gr.skip(), gr.skip(), gr.skip()
        except Exception:  # noqa: BLE001 - logged here; the user gets one line, never a traceback
            log.exception("adding photos failed")
            return "⚠ adding the photos failed on the server", gr.skip(), gr.skip(), gr.skip()
        return report.summary(), header(service, title), None, umap_view(service, None)

    return add


def make_reset_online(service: SearchService):
    def reset_online(request: gr.Request = None) -> str:
        if not service.can_online:
            return f"⚠ online adaptation is unavailable: {service.online_note}"
        had = service.reset_online(_user(request))
        return ("online adaptation reset: queries are embedded by the shared model again" if had
                else "online adaptation: nothing to reset yet (no online search in this session)")

    return reset_online


def make_forget_online(service: SearchService):
    def forget(request: gr.Request = None) -> None:
        service.drop_online(_user(request))

    return forget


def _warn(message: str) -> tuple:
    gr.Warning(message, duration=6)
    return (f"⚠ {message}",) + (gr.skip(),) * (OUTPUTS - 1)


def make_pick(number: int):
    """A click on the `number`th guess: its name added to the text (once), for the search that follows."""
    def pick(names: list[str], text: str | None) -> str:
        if not names or number >= len(names):
            return gr.skip()
        name, text = names[number], (text or "").strip()
        if name.lower() in text.lower().split(", ") or name.lower() == text.lower():
            return text
        return f"{text}, {name}" if text else name

    return pick


def make_check_upload(readable: QueryFiles):
    """An uploaded query image that is not one (a text file, a broken picture) is taken off at once, with why,
    instead of showing a broken picture until the next search. It reaches this undecoded (preprocess=False):
    gradio's own decoding would fail first, with a traceback in the log and the broken picture left in place."""
    def check(payload: Any):
        try:
            path = _file(payload, readable)
            if path:
                open_image(path)
        except (ImageError, QueryError) as error:
            gr.Warning(f"that upload is not a usable image: {error}", duration=6)
            return None
        return gr.skip()

    return check


def make_select(side: str):
    """A click on a result: it becomes the query image (the canvas is cleared in the page, `CLEAR_CANVAS_JS`)."""
    def select(paths: dict[str, list[str]], event: gr.SelectData):
        chosen = (paths or {}).get(side, [])
        if event.index is None or not 0 <= int(event.index) < len(chosen):
            return (gr.skip(),) * 3
        return chosen[int(event.index)], "", ""

    return select


def example_files(folder: Path) -> list[tuple[str, str]]:
    files = []
    for kind, name in EXAMPLE_KINDS.items():
        for path in sorted(folder.glob(f"{kind}_*")):
            files.append((str(path), f"{name}: {path.stem.split('_', 1)[1]}"))
    return files


def make_example_select(examples: list[tuple[str, str]]):
    """A click on an example: it becomes the query image (sketches too: an uploaded line drawing is prepared as a
    drawing), the canvas cleared in the page."""
    def select(event: gr.SelectData):
        return examples[int(event.index)][0], "", ""

    return select


def make_clear(service: SearchService):
    """Everything but the canvas, which the page clears itself (`CLEAR_CANVAS_JS`)."""
    def run():
        return (None, "", "", READY, [], [], delta_view(service, None), umap_view(service, None), None,
                {"base": [], "adapted": []}, *guess_outputs(None))

    return run


# ---------------------------------------------------------------------------------------------- layout

class ResultFiles:
    """The gallery images the app has shown, as it serves them: each one hard-linked (else copied) once into a
    folder of the app's own, which is, with the examples, all the app serves. Serving the gallery folder itself
    would serve everything beside its images (the demo gallery's folder is all of $HYSTAR_DATA: sketches,
    paintings, manifests), and gradio resolves symbolic links, so a gallery of links would also need the
    folders they point into. At most `keep` files are kept; the oldest go first."""

    def __init__(self, folder: Path | None = None, keep: int = 20_000):
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="hystar-results-"))
            weakref.finalize(self, shutil.rmtree, folder, True)
        self.folder, self.keep = Path(os.path.realpath(folder)), keep
        self.folder.mkdir(parents=True, exist_ok=True)
        self._served: OrderedDict[Path, None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> str:
        real = Path(os.path.realpath(path))
        stat = real.stat()
        key = hashlib.sha1(f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        served = self.folder / f"{key}-{real.name}"
        if not served.is_file():
            tmp = temp_path(served)
            try:
                os.link(real, tmp)
            except OSError:  # another file system, or links not allowed: a copy
                shutil.copyfile(real, tmp)
            os.replace(tmp, served)
        self._remember(served)
        return str(served)

    def _remember(self, served: Path) -> None:
        with self._lock:
            self._served[served] = None
            self._served.move_to_end(served)
            while len(self._served) > self.keep:
                self._served.popitem(last=False)[0].unlink(missing_ok=True)


def build_app(service: SearchService, config: UiConfig | None = None) -> gr.Blocks:
    """The app around `service`; launch it with `launch`."""
    config = config or UiConfig()
    examples = example_files(config.examples)
    results = ResultFiles()
    # All that is served: the results shown and the example pictures (not their folder, which holds their script).
    gr.set_static_paths([str(results.folder), *(path for path, _ in examples)])
    with gr.Blocks(title=config.title, analytics_enabled=False) as demo:
        title = gr.Markdown(header(service, config.title))
        indexing = gr.Markdown(indexing_line(service), elem_id="indexing")
        timer = gr.Timer(1.0)  # each page refreshes what it was built with once, and while indexing or the UMAP waits
        paths = gr.State({"base": [], "adapted": []})
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=380):
                sketch = gr.Sketchpad(
                    value=blank_canvas(config.canvas), label="sketch", type="pil", image_mode="RGB",
                    canvas_size=(config.canvas, config.canvas), fixed_canvas=True, layers=False, transforms=(),
                    brush=gr.Brush(default_size=config.brush, colors=["#000000"], color_mode="fixed"),
                    height=config.canvas + 40, elem_id=CANVAS_ID)
                sketch_weight = gr.Slider(0, 2, 1.0, step=0.1, label="sketch weight")
                image = gr.Image(label="image: a painting, a photo, a low-res shot", type="filepath",
                                      sources=["upload", "clipboard"], height=220, elem_id="upload")
                image_weight = gr.Slider(0, 2, 1.0, step=0.1, label="image weight")
                with gr.Row():
                    text = gr.Textbox(label="text", placeholder="a photo of a giraffe", scale=3)
                    text_weight = gr.Slider(0, 2, 1.0, step=0.1, label="text weight", scale=2)
                with gr.Row():
                    negative = gr.Textbox(label="negative text (pushed away)", placeholder="a drawing", scale=3)
                    negative_weight = gr.Slider(0, 2, 0.5, step=0.1, label="negative weight", scale=2)
                with gr.Row():
                    search_button = gr.Button("Search", variant="primary", elem_id="search")
                    clear_button = gr.Button("Clear")
                with gr.Group():
                    adapt = gr.Checkbox(
                        service.can_adapt, label="style adaptation (Hystar), side by side with the base encoder",
                        interactive=service.can_adapt,
                        info=None if service.can_adapt else "unavailable: no trained adapter was found")
                    expand = gr.Checkbox(
                        True, label="query expansion: the best matches widen the query, and each candidate is judged "
                              "with its neighbours (the best match stays first)",
                        info="QuARI re-ranking, when on, replaces it", elem_id="expand")
                    name_prior = gr.Checkbox(
                        True, label="name prior: a drawing is searched leaning toward the gallery's class names it "
                              "reads as (the guesses below)",
                        info=name_prior_info(service.config.name_prior), elem_id="name-prior")
                    rerank = gr.Checkbox(False, label="re-rank with QuARI", interactive=service.can_rerank,
                                         info=rerank_info(service), elem_id="rerank")
                    online = gr.Checkbox(
                        False, label="online adaptation: the query encoder keeps adapting to this session's "
                                     "sketches and images", interactive=service.can_online, elem_id="online",
                        info=None if service.can_online else f"unavailable: {service.online_note}")
                    reset_button = gr.Button("reset online adaptation", size="sm", interactive=service.can_online,
                                             elem_id="reset-online")
                    k = gr.Slider(1, MAX_K, config.k, step=1, label="top-k")
                with gr.Group(visible=service.can_add):
                    add_files = gr.File(label="Add photos to the gallery (images or .zip archives)",
                                        file_count="multiple", file_types=["image", ".zip"], type="filepath",
                                        elem_id="add-files")
                    add_button = gr.Button("Add to the gallery", size="sm", elem_id="add-photos")
                    add_status = gr.Markdown(NO_GALLERY if service.gallery_size == 0 else "", elem_id="add-status")
                example_gallery = gr.Gallery(value=examples, label="examples: one click each", columns=5,
                                             height=260, allow_preview=False, elem_id="examples")
            with gr.Column(scale=3, min_width=480):
                status = gr.Markdown(READY, elem_id="status")
                with gr.Row():
                    base_gallery = gr.Gallery(label="base encoder", height=520, allow_preview=False,
                                              columns=SIDE_BY_SIDE if service.can_adapt else ALONE,
                                              elem_id="base-results")
                    adapted_gallery = gr.Gallery(label="Hystar (style-adapted)", columns=SIDE_BY_SIDE, height=520,
                                                 allow_preview=False, visible=service.can_adapt,
                                                 elem_id="adapted-results")
                with gr.Column(elem_id="guesses"):
                    guess_text = gr.Markdown(visible=False, elem_id="guess-line")
                    with gr.Row():
                        guess_buttons = [gr.Button(visible=False, size="sm", min_width=80, elem_id=f"guess-{number}")
                                         for number in range(GUESS_BUTTONS)]
                guessed = gr.State([])
                with gr.Row():
                    with gr.Column():
                        delta_plot = gr.Plot(delta_view(service, None), label="how much Hystar adapts the encoder "
                                             "(ΔS per block)", elem_id="delta-plot")
                        gr.Markdown(f"<small>{DELTA_HELP}</small>", elem_id="delta-help")
                    with gr.Column():
                        umap_plot = gr.Plot(umap_view(service, None), label="style shift (UMAP)",
                                            elem_id="umap-plot")
                        gr.Markdown(f"<small>{UMAP_HELP}</small>", elem_id="umap-help")
                with gr.Accordion("details", open=False):
                    info = gr.JSON(label="last search")

        inputs = [sketch, image, text, negative, sketch_weight, image_weight, text_weight, negative_weight, adapt,
                  rerank, k, online, expand, name_prior]  # the newest last: callers of the API from before still work
        outputs = [status, base_gallery, adapted_gallery, delta_plot, umap_plot, info, paths, guess_text,
                   *guess_buttons, guessed]
        readable = QueryFiles.of_app(results, examples)
        search = make_search(service, results, readable)
        new_query = [image, text, negative]
        # Uploads reach `search` undecoded (preprocess=False): `hystar.images.open_image` judges every file
        # (corrupt, huge, odd modes) and says what is wrong in one line; gradio's own decoding would not.
        searching = dict(fn=search, inputs=inputs, outputs=outputs, preprocess=False)
        search_button.click(**searching, api_name="search")
        text.submit(**searching, api_visibility="private")
        for number, button in enumerate(guess_buttons):  # a guess into the text, then the same search again
            button.click(make_pick(number), [guessed, text], text, api_visibility="private") \
                .then(**searching, api_visibility="private")
        image.upload(make_check_upload(readable), image, image, preprocess=False, api_visibility="private")
        # The canvas is never set from the server: the editor then re-uploads its layers in a loop and ignores
        # strokes (gradio 6.3); the page clears it with its own trash button and picks the brush again.
        for gallery, side in ((base_gallery, "base"), (adapted_gallery, "adapted")):
            gallery.select(make_select(side), [paths], new_query, js=CLEAR_CANVAS_JS, api_visibility="private") \
                .then(**searching, api_visibility="private")
        example_gallery.select(make_example_select(examples), None, new_query, js=CLEAR_CANVAS_JS,
                               api_visibility="private").then(**searching, api_visibility="private")
        clear_button.click(make_clear(service), None, new_query + outputs, js=CLEAR_CANVAS_JS,
                           api_visibility="private")
        sketch.clear(None, None, None, js=BRUSH_JS, api_visibility="private")  # its trash icon: the brush stays
        reset_button.click(make_reset_online(service), None, status, api_name="reset_online")
        add_button.click(make_add(service, config.title), [add_files], [add_status, title, add_files, umap_plot],
                         api_name="add_photos")
        demo.unload(make_forget_online(service))
        timer.tick(make_tick(service, config.title), None, [indexing, title, rerank, umap_plot, timer],
                   api_visibility="private", show_progress="hidden")
    return demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)


def launch(demo: gr.Blocks, port: int | None = None, host: str | None = None, block: bool = True,
           quiet: bool = False) -> str:
    """Serve the app; returns its local URL (with `block=False` the server runs in the background)."""
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, css=CSS,
                show_error=False, footer_links=["api"], max_file_size=MAX_BYTES)  # larger: refused on upload
    return demo.local_url

