"""Corpora, token streams and cross-tokenizer alignment.

``load_corpus(source)`` → :class:`Corpus`; ``make_stream(corpus, tokenizer, StreamConfig(...))``
→ :class:`TokenStream` (ids [n, t] + mask); ``streams_for_hosts(hosts, corpus, ...)`` gives one
shared stream when the tokenizers match; ``aligned_streams(corpus, tok_a, tok_b)`` pairs rows of
two differently tokenized streams at shared character offsets.
"""

from .align import AlignConfig, AlignedPair, Alignment, MultiAlignment, aligned_streams, aligned_streams_all
from .corpus import Corpus, CorpusConfig, Document, corpus_from_texts, default_corpus, is_heldout, load_corpus
from .host_streams import HostStreams, streams_for_hosts
from .stream import StreamConfig, TokenStream, context_length, make_stream, special_mask
from .tokenizing import OffsetEncoder, SpecialIds, adds_bos, special_ids, tokenizer_fingerprint

__all__ = [
    "AlignConfig", "AlignedPair", "Alignment", "Corpus", "CorpusConfig", "Document", "HostStreams", "OffsetEncoder",
    "SpecialIds", "StreamConfig", "TokenStream", "adds_bos", "aligned_streams", "aligned_streams_all", "MultiAlignment", "context_length", "corpus_from_texts",
    "default_corpus", "is_heldout", "load_corpus", "make_stream", "special_ids", "special_mask", "streams_for_hosts",
    "tokenizer_fingerprint",
]
