"""GPT-2's end-of-text token, the one special token minigpt's tokenizers, data and training share."""

ENDOFTEXT = "<|endoftext|>"
