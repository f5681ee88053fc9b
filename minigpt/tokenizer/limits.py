"""Limits a byte-level BPE vocabulary must respect, loaded or trained (GPT-2's: 128 bytes for its longest token,
320 KB in all, 50,257 tokens).

They keep the work of building the encoder (proportional to the vocabulary's total bytes times its longest
token) bounded whatever a tokenizer file says; training never makes a token longer than ``MAX_TOKEN_BYTES``
(longer pre-tokens are learnt from in pieces).
"""
MAX_TOKEN_BYTES = 256  # bytes of one token
MAX_VOCAB_BYTES = 1 << 21  # bytes of all the tokens together
MAX_FILE_BYTES = 1 << 27  # a tokenizer file (tokenizer.json, encoder.json, vocab.bpe) larger than this is refused
MAX_VOCAB_SIZE = 1 << 20  # tokens a trained vocabulary may have
