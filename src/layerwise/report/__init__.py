"""Reports: what the tool writes.

- ``serialize``: JSON with NaN as null, atomic writes (imported here; light, no plotting library);
- ``figures``: every figure, drawn without pyplot's global state;
- ``writers``: each command's output folder (results.json, CSV, figures);
- ``collect`` and ``html``: ``layerwise report``, one self-contained HTML page (Jinja2 template in ``templates/``)
  from any run folders.
"""

from layerwise._deprecated import moved_names
from layerwise.report.serialize import (
    atomic_save_tensors,
    atomic_write,
    atomic_write_text,
    jsonable,
    warning_messages,
    write_json,
)

__all__ = ["atomic_save_tensors", "atomic_write", "atomic_write_text", "jsonable", "warning_messages", "write_json"]

__getattr__ = moved_names(
    __name__,
    {
        "json_name": "layerwise.measures:json_name",
        "JSON_NAMES": "layerwise.measures:JSON_NAMES",
        "unique_messages": "layerwise.report.serialize:warning_messages",
        "heatmap": "layerwise.report.figures:heatmap",
        "layer_curves": "layerwise.report.figures:layer_curves",
        "cos_boxplot": "layerwise.report.figures:cos_boxplot",
        "write_analysis": "layerwise.report.writers:write_analysis",
        "write_compare": "layerwise.report.writers:write_compare",
    },
)
