"""The one exception type for mistakes a user can make and fix."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user caused and can fix; rendered as one line, never a traceback.

    Rendered as ``error: <where>: <key>: <what> (hint: <fix>)``; ``key`` and ``hint`` are
    optional. ``where`` is a file (recipe, image, device) or a command name.
    """

    exit_code = 2

    def __init__(self, where: str, what: str, *, key: str = "", hint: str = "") -> None:
        self.where = str(where)
        self.key = key
        self.what = what
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        parts = [self.where]
        if self.key:
            parts.append(self.key)
        line = "error: " + ": ".join(parts) + ": " + self.what
        if self.hint:
            line += f" (hint: {self.hint})"
        return " ".join(line.split("\n"))


class Interrupted(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives during a run."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")
