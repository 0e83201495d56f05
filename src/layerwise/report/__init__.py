"""Reports: what the tool writes.

- ``serialize``: JSON with NaN as null, atomic writes (imported here; light, no plotting library);
- ``figures``: every figure, drawn without pyplot's global state;
- ``writers``: each command's output folder (results.json, CSV, figures);
- ``lpft_figures``: the figures of ``lpft``;
- ``collect``, ``kinds``, ``overlays`` and ``html``: ``layerwise report``, one self-contained HTML page (Jinja2
  template in ``templates/``) from any run folders: ``collect`` reads a folder, ``kinds`` holds one collector per
  command, ``overlays`` draws each kind's headline figure across its runs.
"""

from layerwise.report.serialize import (
    atomic_save_tensors,
    atomic_write,
    atomic_write_text,
    jsonable,
    warning_messages,
    write_json,
)

__all__ = ["atomic_save_tensors", "atomic_write", "atomic_write_text", "jsonable", "warning_messages", "write_json"]
