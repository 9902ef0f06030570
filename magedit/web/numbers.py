"""A control's numeric range, and the one check every number from the page or the API passes."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric control accepts, on the page (its slider) and through the API."""

    label: str  # how error messages name the control
    low: float
    high: float
    integer: bool = False

    def text(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        return f"{kind} from {self.low:.10g} to {self.high:.10g}"

    def check(self, value: Any) -> int | float:
        """``value`` as an int (integer controls) or a float. ValueError naming the control and
        what it accepts for None, text, lists, NaN, infinity, a fraction where a whole number is
        needed, or a value outside the range."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            shown = "empty" if value is None or value == "" else f"{short(value)}, not a number"
            raise ValueError(f"{self.label} is {shown}; give {self.text()}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{self.label} is {number}; give {self.text()}")
        if self.integer and not number.is_integer():
            raise ValueError(f"{self.label} is {number:g}; give {self.text()}")
        if not self.low <= number <= self.high:
            raise ValueError(f"{self.label} is {number:.10g}, out of range; give {self.text()}")
        return int(number) if self.integer else number


def short(value: Any, limit: int = 40) -> str:
    """repr of a value from the API, cut short (it is shown in an error message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
