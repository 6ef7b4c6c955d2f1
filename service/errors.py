"""Errors raised for bad requests, carrying the offending field so adapters can report it precisely."""


class BadRequest(ValueError):
    """The caller asked for something invalid: unknown method/layer/option, bad tensor, bad class id."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


class OptionError(BadRequest):
    """A method option out of its range or of the wrong kind (INVALID_ARGUMENT on `options`)."""

    def __init__(self, message: str, field: str = "options"):
        super().__init__(message, field)
