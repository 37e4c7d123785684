"""export's error: the caller's input cannot be exported; our own bugs raise other errors."""


class ExportError(ValueError):
    """The caller's input cannot be exported (bad checkpoint, key, options, a model the programs cannot lower)."""
