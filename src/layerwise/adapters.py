"""Deprecated: ``layerwise.adapters`` moved to ``layerwise.stack``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.stack': ['ADAPTERS', 'Adapter', 'find_adapter', 'hooked_embed', 'register_adapter',
                     'supported_architectures']})
