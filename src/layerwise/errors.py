"""One exception type for bad input: the CLI prints its message on one line and exits non-zero."""


class LayerwiseError(ValueError):
    """Bad input the user can fix. The message says what is wrong and what to do.

    A message names an option by its key in backticks (`` `batch_size` ``, the keyword a Python caller passes);
    the CLI prints that key as its flag (``--batch-size``). ``option`` is the key at fault, when one is."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class UndefinedLayerWarning(UserWarning):
    """A similarity is undefined for a layer (e.g. features constant across samples); reported as null."""
