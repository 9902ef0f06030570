"""The web page (Gradio): the only package that imports gradio.

- ``layout``: the components and the wiring of their events (``build_demo``);
- ``events``: what each control does, as plain functions of the controls' values;
- ``masks``: one session's photo and the one mask in use, and the canvas that shows it;
- ``job``: an edit on a worker thread, streamed as page updates;
- ``admission``: who may join the edit queue, and the edits checked on the way in;
- ``charts``, ``components``, ``limits``, ``numbers``: the progress charts, two components made
  safe for a public page, every cap with its reason, the numbers' ranges.

Gradio is imported when ``build_demo`` is first asked for, not with the package: ``app.py``
reads ``limits`` and checks that the weights can be had before it pays for that import.
"""

from typing import Any

__all__ = ["build_demo"]


def __getattr__(name: str) -> Any:
    if name == "build_demo":
        from magedit.web.layout import build_demo

        return build_demo
    raise AttributeError(f"module 'magedit.web' has no attribute {name!r}")
