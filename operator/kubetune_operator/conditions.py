"""The FineTuneJob's conditions (metav1.Condition style) and the rule for status messages.

One entry per condition type, in first-set order; a condition keeps its
lastTransitionTime while its status stays the same. Messages are whitespace-collapsed,
bounded and never empty (the v1.20 apiserver's merge patch turns "" inside a list into null,
which its schema then refuses).
"""

from __future__ import annotations

from typing import Literal

from kubetune_crd.status import Condition

MAX_MESSAGE = 1000


def short(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line, at most `limit` characters (cut with "...")."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConditionSet:
    """The previous conditions, updated one type at a time."""

    def __init__(self, previous: list[Condition], now: str, generation: int | None) -> None:
        self._by_type = {c.type: c for c in previous}
        self._order = [c.type for c in previous]
        self._now = now
        self._generation = generation

    def set(self, ctype: str, status: bool, reason: str, message: str = "") -> None:
        value: Literal["True", "False"] = "True" if status else "False"
        old = self._by_type.get(ctype)
        since = old.last_transition_time if old is not None and old.status == value else self._now
        self._by_type[ctype] = Condition(
            type=ctype,
            status=value,
            reason=reason,
            message=short(message) or reason,
            last_transition_time=since,
            observed_generation=self._generation,
        )
        if ctype not in self._order:
            self._order.append(ctype)

    def has(self, ctype: str) -> bool:
        return ctype in self._by_type

    def result(self) -> list[Condition]:
        return [self._by_type[t] for t in self._order]
