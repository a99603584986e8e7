"""Train a byte-level BPE tokenizer on a corpus (the zoo's tokenizer) with the ``tokenizers`` library."""

from __future__ import annotations

from typing import Iterable

from .._errors import UniversalityError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_byte_bpe(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2):
    """A GPT-2-style byte-level BPE trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast``.

    Id 0 is ``<|endoftext|>`` (BOS = EOS, documents are EOS-separated, no BOS is
    prepended, as in GPT-NeoX/Pythia), id 1 is ``<|pad|>``; then the 256 byte
    symbols and the learned merges. Training is deterministic for the same texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not isinstance(vocab_size, int) or vocab_size < 260:
        raise UniversalityError(f"vocab_size {vocab_size!r} is not valid for a byte-level BPE; use an integer of at least 260")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                   unk_token=None, clean_up_tokenization_spaces=False)
