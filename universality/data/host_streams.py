"""Token streams for a list of hosts: one shared stream when their tokenizers match, else an aligned pair.

Lives apart from :mod:`.stream` and :mod:`.align` because it uses both (and
:mod:`.align` uses :mod:`.stream`): the imports stay one way.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._errors import UniversalityError
from .align import AlignConfig, aligned_streams, aligned_streams_all
from .corpus import Corpus
from .stream import StreamConfig, TokenStream, context_length, make_stream
from .tokenizing import tokenizer_fingerprint


class HostStreams(NamedTuple):
    """Streams for a list of hosts: one shared stream, or one per host plus the alignment between two."""

    streams: list[TokenStream]
    """One stream per host, in the order given (the same object when the tokenizers match)."""
    alignment: Any
    """``None`` when all hosts share a tokenizer, an :class:`~universality.data.align.Alignment` for two hosts, else a
    :class:`~universality.data.align.MultiAlignment` (rows by stream: :meth:`~universality.data.align.MultiAlignment.rows_for`)."""


def streams_for_hosts(hosts: list[Any], corpus: Corpus, config: StreamConfig | None = None, align: bool = False,
                      pool: str = "token") -> HostStreams:
    """Token streams that let ``hosts`` be compared position by position.

    Hosts whose tokenizers have equal fingerprints get one identical stream.
    When they differ, ``align=True`` builds an aligned pair for two hosts (see
    :func:`~universality.data.align.aligned_streams`) and, for three or more, one stream per distinct
    tokenizer aligned at the token ends every tokenizer shares (:func:`~universality.data.align.aligned_streams_all`;
    hosts with the same tokenizer share a stream); otherwise it is an error.
    """
    config = config or StreamConfig()
    if not hosts:
        raise UniversalityError("give at least one host to build a token stream for")
    limits = [n for n in (context_length(h) for h in hosts) if n is not None]
    max_len = min(limits) if limits else None
    fps = [tokenizer_fingerprint(h.tokenizer) for h in hosts]
    if len(set(fps)) == 1:
        s = make_stream(corpus, hosts[0].tokenizer, config, max_len=max_len)
        return HostStreams([s] * len(hosts), None)
    if not align:
        raise UniversalityError(
            "these hosts use different tokenizers (fingerprints " + ", ".join(sorted(set(fps)))
            + "); ask for cross-tokenizer alignment (align=True) to compare them"
        )
    if max_len is not None and config.seq_len > max_len:
        raise UniversalityError(f"seq_len {config.seq_len} exceeds the model's context of {max_len} positions; use seq_len <= {max_len}")
    acfg = AlignConfig(seq_len=config.seq_len, n_sequences=config.n_sequences, seed=config.seed, split=config.split,
                       bos=config.bos, pool=pool)
    if len(hosts) > 2:
        distinct = list(dict.fromkeys(fps))
        multi = aligned_streams_all(corpus, [hosts[fps.index(fp)].tokenizer for fp in distinct], acfg)
        return HostStreams([multi.streams[distinct.index(fp)] for fp in fps], multi)
    pair = aligned_streams(corpus, hosts[0].tokenizer, hosts[1].tokenizer, acfg)
    return HostStreams([pair.a, pair.b], pair.alignment)
