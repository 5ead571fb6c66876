"""Close the libguestfs handle: the file edits are flushed, the image file is whole again."""

from __future__ import annotations

from stages.build.edit_open import close_guest
from stages.core.runner import Context, Stage


class EditClose(Stage):
    """Flush and close the handle: everything after works on a finished file."""

    name = "close libguestfs"
    reads = frozenset({"g"})

    def run(self, ctx: Context) -> None:
        close_guest(ctx)
