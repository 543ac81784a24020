"""Secrets (InfluxDB tokens, passwords) held in one object whose repr never shows them."""

from __future__ import annotations

import os
from pathlib import Path


class Secret:
    """A string that refuses to be printed: ``repr``/``str`` give ``Secret(***)``."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    @classmethod
    def from_sources(cls, env: str | None = None, file: str | os.PathLike | None = None) -> "Secret | None":
        """Read from an environment variable first, then a file (first line, stripped)."""
        if env and os.environ.get(env):
            return cls(os.environ[env])
        if file:
            p = Path(file)
            if p.is_file():
                return cls(p.read_text().strip())
        return None


def redact(text: str, *secrets: "Secret | None") -> str:
    """Remove every secret's value from a message before it reaches a log or error."""
    for s in secrets:
        if s:
            text = text.replace(s.reveal(), "***")
    return text
