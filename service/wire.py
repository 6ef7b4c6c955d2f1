"""Python values to and from camserve.v1 option messages: one conversion for the server and the client."""
from __future__ import annotations

from camserve.v1 import explain_pb2 as pb

from .errors import BadRequest


def option_value(value) -> pb.OptionValue:
    """A method option's value as an OptionValue (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return pb.OptionValue(flag=value)
    if isinstance(value, int):
        return pb.OptionValue(integer=value)
    if isinstance(value, float):
        return pb.OptionValue(number=value)
    return pb.OptionValue(text="" if value is None else str(value))


def option(value: pb.OptionValue):
    """The Python value an OptionValue holds."""
    kind = value.WhichOneof("value")
    if kind is None:
        raise BadRequest("an option value is empty", "options")
    return getattr(value, kind)
