"""Errors that the command line turns into one clear message and an exit code."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (a scenario, a flag, a dataset): exit code 2, never a traceback.

    ``file``, ``line`` and ``field`` locate the problem; ``str()`` renders them as
    ``FILE:LINE: FIELD: message`` so editors can jump to it.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        fld = f"{self.field}: " if self.field else ""
        return f"{where}{fld}{self.message}"


class InputErrors(InputError):
    """Several problems in one input, each an :class:`InputError`; ``str()`` gives one per line.

    The first problem also fills ``file``/``line``/``field``/``message`` so code that expects a
    single error keeps working.
    """

    def __init__(self, problems: list[InputError]):
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field)

    def render(self) -> str:
        return "\n".join(p.render() for p in self.problems)


class LaunchError(Exception):
    """Replicas could not be brought up (never healthy, exited early)."""
