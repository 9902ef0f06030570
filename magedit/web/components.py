"""Two Gradio components made safe for a public page: uploads are handed to our own checked
readers instead of being decoded by Gradio first (whose errors say only "Error"), and the brush
editor's upload store is bounded. Also the small glue every event uses: update dicts to output
tuples (``converter``), and one log line per refused input (``log``).
"""

from __future__ import annotations

import inspect
import io
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
from PIL import Image

from magedit import images
from magedit.web.limits import (
    MAX_BLOB_BYTES,
    MAX_BLOB_STORE,
    MAX_BLOBS,
    MAX_LAYER_PIXELS,
    MAX_LAYERS,
)
from magedit.web.services import log


def named_handler(
    fn: Callable[[dict[str, Any], Any], Any],
    names: Sequence[str],
    defaults: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    """``fn(values, request)`` as a Gradio handler of the inputs ``names``, in that order, and
    the visitor's gr.Request: ``values`` maps each name to its input's value. Gradio reads the
    handler's parameters (the API's parameter names and ``defaults``) from its signature, and
    passes the gr.Request only to a parameter annotated with it, so the signature is written
    here from the list, once, instead of spelled out per handler. A generator ``fn`` gives a
    generator handler (Gradio streams its updates)."""
    defaults = defaults or {}
    empty = inspect.Parameter.empty
    plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(n, plain, default=defaults.get(n, empty)) for n in names]
    request = inspect.Parameter("request", plain, default=None, annotation=gr.Request)
    signature = inspect.Signature([*parameters, request])

    def split(args: tuple, kwargs: dict) -> tuple[dict[str, Any], Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return values, values.pop("request")

    if inspect.isgeneratorfunction(fn):

        def handler(*args: Any, **kwargs: Any) -> Any:
            yield from fn(*split(args, kwargs))

    else:

        def handler(*args: Any, **kwargs: Any) -> Any:
            return fn(*split(args, kwargs))

    handler.__signature__ = signature  # type: ignore[attr-defined]
    handler.__annotations__ = {"request": gr.Request}
    handler.__name__ = handler.__qualname__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def converter(names: Sequence[str]) -> Callable[[dict[str, Any]], Any]:
    """An update dict -> the values for outputs ``names`` (gr.skip() for the rest): a tuple, or
    the value itself for one output (Gradio would hand a 1-tuple to that one component whole:
    a skip inside it reached the page as "[object Object]")."""
    if len(names) == 1:
        (name,) = names
        return lambda update: update.get(name, gr.skip())

    def convert(update: dict[str, Any]) -> tuple:
        return tuple(update.get(name, gr.skip()) for name in names)

    return convert


class PhotoInput(gr.Image):
    """gr.Image whose upload reaches the handler as its file path, undecoded.

    Gradio's own preprocessing opens the file with PIL first, so an HTML page renamed .png, an
    empty file, a truncated JPEG or a 2.5-gigapixel PNG ends in a bare "Error". Here every file
    goes to ``magedit.images.load_image`` (format from the content, size from the header before
    decoding), whose errors say what is wrong and what to do. A data URL (a pasted image) is
    written to a file first.
    """

    is_template = True  # the frontend of gr.Image

    def preprocess(self, payload: Any) -> str | None:
        if payload is None:
            return None
        if payload.path is not None:
            return str(payload.path)
        try:
            return super().preprocess(payload)
        except Exception as error:  # a pasted data URL PIL cannot read
            raise gr.Error(
                "the pasted image could not be read; save it as a PNG or JPEG and upload the file",
                print_exception=False,
            ) from error


class BrushEditor(gr.ImageEditor):
    """gr.ImageEditor with a bounded upload store and layers checked before decoding.

    The editor uploads each layer through ``accept_blobs`` and Gradio keeps it until the event
    that reads it; this keeps at most ``limits.MAX_BLOBS`` paintings and ``MAX_BLOB_STORE``
    bytes (the oldest dropped), refuses a file over ``MAX_BLOB_BYTES`` or a layer index beyond
    ``MAX_LAYERS``, and reads a layer only if its header says it is at most
    ``MAX_LAYER_PIXELS`` (a 12 KB PNG can claim 100 megapixels).
    """

    is_template = True  # the frontend of gr.ImageEditor

    @gr.components.base.server
    def accept_blobs(self, data: Any) -> None:
        kind = data.data.get("type")
        index = data.data.get("index")
        file = data.files[0][1] if data.files else b""
        if len(file) > MAX_BLOB_BYTES:
            log(f"a brush upload of {len(file)} bytes (at most {MAX_BLOB_BYTES})")
            return
        if kind == "layer":
            try:
                index = int(index)
            except (TypeError, ValueError):
                log(f"a brush layer with index {str(index)[:20]!r}")
                return
            if not 0 <= index < MAX_LAYERS:
                log(f"a brush layer with index {index} (at most {MAX_LAYERS - 1})")
                return
        super().accept_blobs(data)
        self._bound_store()

    def _bound_store(self) -> None:
        store = self.blob_storage

        def size(entry: Any) -> int:
            parts = [entry.background, entry.composite, *entry.layers]
            return sum(len(part) for part in parts if part)

        total = sum(size(entry) for entry in store.values())
        while store and (len(store) > MAX_BLOBS or total > MAX_BLOB_STORE):
            oldest = next(iter(store))
            total -= size(store.pop(oldest))

    def preprocess(self, payload: Any) -> Any:
        if payload is not None:
            # The painting comes from the upload store (the page's brush) or as files (the API).
            source = payload if payload.id is None else self.blob_storage.get(payload.id)
            if source is not None:
                layers = list(source.layers or [])
                if len(layers) > MAX_LAYERS:
                    raise _refused(f"the brush sent {len(layers)} layers")
                for part in (source.background, source.composite, *layers):
                    if part:
                        _check_header(part if isinstance(part, bytes) else part.path)
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except (OSError, ValueError, SyntaxError) as error:
            raise _refused(f"the brush's painting could not be read ({error})") from None


def _check_header(data: bytes | str) -> None:
    """Refuse a brush image (bytes, or a file's path) whose header claims more than
    MAX_LAYER_PIXELS, before decoding it."""
    try:
        with warnings.catch_warnings():  # the size is checked here, in words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
                width, height = im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise _refused(f"the brush's painting could not be read ({error})") from None
    if width * height > MAX_LAYER_PIXELS:
        raise _refused(f"a brush layer of {width}x{height} pixels")


def _refused(reason: str) -> gr.Error:
    log(reason)
    return gr.Error(
        f"{reason}; paint on the photo with the brush (clear the painting and try again)",
        title="Cannot read the brush",
        print_exception=False,
    )


def read_upload(path: str | None, what: str = "photo") -> Any:
    """``images.load_image`` of an upload, for handlers: None stays None."""
    return None if path is None else images.load_image(path)
