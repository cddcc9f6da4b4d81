"""A JSON number that keeps how it was written.

`1.10`, `1e2` or `1e999` decode (see `syncd.sync.jsonrecords`) to `Number`s: floats
that remember their text, so a text column stores what the source wrote (not `1.1`,
`100.0` or `inf`) and a numeric column its exact value. It lives in `columns`, below
the sync layer, because both the decoder (sync layer) and the column converters
(`syncd.columns.converters`) use it.
"""

from __future__ import annotations


class Number(float):
    """A JSON number with a fraction or an exponent, as a float that keeps its text."""

    __slots__ = ("text",)

    text: str

    def __new__(cls, text: str) -> Number:
        number = super().__new__(cls, text)
        number.text = text
        return number


def spelling(value: float) -> str:
    """How a number was written in the JSON it came from (for a text column)."""
    return value.text if isinstance(value, Number) else str(value)
