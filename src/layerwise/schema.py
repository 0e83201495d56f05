"""Typed validation of options: one pydantic model per command's options, every violation one
``LayerwiseError`` line naming the option and what to pass instead.

The same model validates flags and YAML files, so a value is checked once, in one place.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from layerwise.errors import LayerwiseError

M = TypeVar("M", bound=BaseModel)


class Options(BaseModel):
    """Base of option schemas: unknown keys are errors, types are strict ("three" is not an int, 64.5 is
    not a batch size, "yes" is not a boolean), and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, frozen=False)


class Record(Options):
    """Base of the schemas of JSON files the tool reads back (run folders, marks): strict types for the keys it
    reads, other keys allowed (a file keeps whatever its writer recorded)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


Finite = Annotated[float, AfterValidator(_finite)]


def describe(e: ValidationError, source: str = "options", option_keys: bool = True) -> str:
    """One line listing each bad key, its value and the rule it breaks; option keys in backticks
    (`` `batch_size` ``: the keyword a Python caller passes, which the command line renders as its flag)."""
    problems = []
    for err in e.errors():
        key = ".".join(str(p) if str(p).isprintable() else repr(p) for p in err["loc"]) or "value"
        key = f"`{key}`" if option_keys and err["loc"] else key
        given = f" (got {short_repr(err['input'])})" if err["type"] != "missing" and "input" in err else ""
        problems.append(f"{key}: {' '.join(err['msg'].removeprefix('Value error, ').split())}{given}")
    return f"bad {source}: {'; '.join(problems)}"


def validate(model: type[M], values: dict[str, Any], source: str = "options", *, option_keys: bool = False) -> M:
    """``model(**values)``, or a LayerwiseError naming each bad key (``describe``): plainly, as keys of a file are;
    ``option_keys=True`` puts them in backticks, as options (which the command line renders as flags)."""
    try:
        return model.model_validate(values)
    except ValidationError as e:
        raise LayerwiseError(describe(e, source, option_keys)) from None


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, at most ``limit`` characters: an error names the value, it does not print a whole file."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python prints
        return "a number too long to print"
    return text if len(text) <= limit else text[:limit - 3] + "…"
