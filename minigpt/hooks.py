"""The handle that every ``register_*hook`` returns: ``handle.remove()`` takes the hook away again."""
from __future__ import annotations

import itertools

_ids = itertools.count()


class RemovableHandle:
    """Removes one hook from the dict it was registered in (removing twice is harmless).

    Also a context manager: ``with module.register_forward_hook(fn): ...`` removes it on exit.
    """

    __slots__ = ("_hooks", "id")

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = next(_ids)

    def remove(self) -> None:
        if self._hooks is not None:
            self._hooks.pop(self.id, None)
            self._hooks = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
