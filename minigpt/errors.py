"""minigpt's own exception type: a ValueError, so ``except ValueError`` catches it too."""


class MiniGPTError(ValueError):
    """Bad input or a state minigpt cannot work with; the message names the problem."""
