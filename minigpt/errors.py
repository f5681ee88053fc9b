"""minigpt's own exception type: a ValueError, so ``except ValueError`` catches it too."""


class MiniGPTError(ValueError):
    """Bad input or a state minigpt cannot work with; the message names the problem."""


class DisallowedSpecialTokenError(MiniGPTError):
    """Text to encode contains a special token that the caller did not allow (``token`` names it)."""

    def __init__(self, message: str, token: str):
        super().__init__(message)
        self.token = token
