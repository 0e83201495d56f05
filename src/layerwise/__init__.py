"""layerwise: study and use how representations move through the layers of a transformer."""

from layerwise.errors import LayerwiseError, UndefinedLayerWarning

__version__ = "0.1.0"
__all__ = ["LayerwiseError", "UndefinedLayerWarning", "__version__"]
