"""The web page (Gradio): the only package that imports gradio.

- ``layout``: the components and the wiring of their events (``build_demo``);
- ``events``: what each control does, as plain functions of the controls' values;
- ``masks``: one session's photo and the one mask in use, and the canvas that shows it;
- ``job``: an edit's life: the line, the worker thread, the stream of plain-text updates;
- ``api``: the API's endpoints (``/edit``, ``/segment``) through the same checks and job;
- ``admission``: who may join the edit queue, and the edits checked on the way in;
- ``services``: what the handlers share (the models, the line, the results' folder);
- ``charts``, ``components``, ``limits``: the progress charts, the components made safe for a
  public page (and handlers named from a list), every cap with its reason.

The settings (their ranges, labels and defaults) come from ``magedit.controls``.

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
