"""One exception type for bad input: the CLI prints its message on one line and exits non-zero."""


class LayerwiseError(ValueError):
    """Bad input the user can fix. The message says what is wrong and what to do."""


class UndefinedLayerWarning(UserWarning):
    """A similarity is undefined for a layer (e.g. features constant across samples); reported as null."""
