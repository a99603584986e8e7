"""A client for any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server, Ollama, a hosted API).

* **Concurrency**: :meth:`ChatClient.complete_many` keeps up to ``concurrency`` requests in flight (threads over
  one pooled ``httpx`` client), so throughput is bounded by the endpoint, not by the client.
* **Retries with backoff**: timeouts, dropped connections, HTTP 429 and 5xx, replies that are not the wire format
  and replies whose content the caller cannot parse are retried, waiting ``backoff · 2^attempt`` seconds (or the
  server's ``Retry-After``), at most ``max_backoff``. What cannot be helped by retrying (a refused API key, a model
  the endpoint does not serve, an endpoint still unreachable after every try) is one :class:`UniversalityError`.
* **On-disk cache**: every parsed reply is stored under ``cache_dir`` by a hash of (endpoint, model, messages,
  sampling settings) as soon as it arrives, so an interrupted run resumes without asking again.
* **API keys** come from the environment variable ``api_key_env`` and live only in memory: they are never part of
  a cache key, a cache file, a config or a report.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .._errors import UniversalityError
from .._io import atomic_write_json

Messages = list[dict]
"""A chat: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``."""


@dataclass
class ClientConfig:
    """Where and how to ask an OpenAI-compatible chat-completions endpoint."""

    base_url: str
    """The API root, e.g. ``http://localhost:8000/v1`` (``/chat/completions`` and ``/models`` are appended)."""
    model: str
    """Model name the endpoint serves."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (read at start, kept in memory only); ``None`` sends no key."""
    require_key: bool = False
    """Fail at once when ``api_key_env`` is unset or empty (hosted APIs); local servers need no key."""
    concurrency: int = 8
    """Requests in flight at once."""
    timeout: float = 60.0
    """Seconds to wait for one reply."""
    max_retries: int = 5
    """Tries after the first for a failed request."""
    backoff: float = 1.0
    """First wait between tries, in seconds (doubled each try)."""
    max_backoff: float = 30.0
    """Longest wait between tries, in seconds."""
    temperature: float = 0.0
    """Sampling temperature sent with every request."""
    max_tokens: int = 256
    """Most tokens a reply may have."""

    def __post_init__(self):
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise UniversalityError(f"endpoint '{self.base_url}' is not valid; give an http:// or https:// URL such as "
                                    "http://localhost:8000/v1")
        if not self.model:
            raise UniversalityError("no model name given for the endpoint; name the model it serves")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise UniversalityError(f"concurrency {self.concurrency!r} is not valid; use an integer of at least 1")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise UniversalityError(f"max_retries {self.max_retries!r} is not valid; use an integer of at least 0")
        if not self.timeout > 0:
            raise UniversalityError(f"timeout {self.timeout!r} is not valid; use a positive number of seconds")


class _Retry(Exception):
    """A failure worth another try (the message says what happened)."""


class ChatClient:
    """Chat completions with concurrency, retries, an on-disk cache and resume (see the module docstring).

    Attributes:
        cfg: the :class:`ClientConfig`; cache_dir: where replies are kept (``None``: no cache);
        n_requests: HTTP requests sent so far; n_cached: replies served from the cache.
    """

    def __init__(self, cfg: ClientConfig, cache_dir: str | os.PathLike | None = None):
        try:
            import httpx
        except ImportError:
            raise UniversalityError("the chat client needs the package httpx; install it with "
                                    "pip install 'universality[interp]'") from None

        self.cfg = cfg
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if cfg.require_key and not key:
            raise UniversalityError(f"the endpoint needs an API key but ${cfg.api_key_env or 'OPENAI_API_KEY'} is not set; "
                                    "export it in the environment (it is never written to disk)")
        self.__key = key
        self._url = cfg.base_url.rstrip("/")
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        self._http = httpx.Client(timeout=cfg.timeout, limits=limits)
        self._lock = threading.Lock()
        self.n_requests = 0
        self.n_cached = 0

    def __repr__(self) -> str:  # never shows the key
        return f"<ChatClient {self._url} model={self.cfg.model!r}>"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- the wire -----------------------------------------------------------------------------
    def _headers(self) -> dict:
        h = {"Content-Type": "application/json"}
        if self.__key:
            h["Authorization"] = f"Bearer {self.__key}"
        return h

    def _fatal_status(self, code: int, body: str) -> UniversalityError | None:
        """The one-sentence error for a status no retry will change, else ``None``."""
        if code in (401, 403):
            env = self.cfg.api_key_env or "OPENAI_API_KEY"
            what = "no API key was sent" if not self.__key else "the API key was refused"
            return UniversalityError(f"endpoint {self._url} answered {code} ({what}); set ${env} to a valid key for it")
        low = body.lower()
        if code == 404 or (code in (400, 422) and "model" in low):
            return UniversalityError(f"endpoint {self._url} does not serve model '{self.cfg.model}' (HTTP {code}); "
                                     "name a model it lists under /models")
        if 400 <= code < 500 and code not in (408, 409, 429):
            return UniversalityError(f"endpoint {self._url} rejected the request with HTTP {code}: {' '.join(body.split())[:200]}")
        return None

    def _post(self, messages: Messages) -> str:
        """One request; returns the reply's content or raises :class:`_Retry` / :class:`UniversalityError`."""
        import httpx

        payload = {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature,
                   "max_tokens": self.cfg.max_tokens}
        with self._lock:
            self.n_requests += 1
        try:
            r = self._http.post(f"{self._url}/chat/completions", json=payload, headers=self._headers())
        except httpx.TimeoutException:
            raise _Retry(f"no reply within {self.cfg.timeout:g} s") from None
        except httpx.ConnectError as e:
            raise _Retry(f"cannot connect ({_reason(e)})") from None
        except httpx.TransportError as e:
            raise _Retry(f"connection dropped ({type(e).__name__})") from None
        if r.status_code == 429 or r.status_code >= 500:
            err = _Retry(f"HTTP {r.status_code}")
            err.retry_after = _retry_after(r.headers.get("retry-after"))  # type: ignore[attr-defined]
            raise err
        fatal = self._fatal_status(r.status_code, r.text)
        if fatal is not None:
            raise fatal
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry("a reply that is not in the chat-completions format") from None
        if not isinstance(content, str):
            raise _Retry("a reply without text content")
        return content

    # ----- cache --------------------------------------------------------------------------------
    def cache_key(self, messages: Messages) -> str:
        """Hash of what determines a reply: endpoint, model, messages, temperature, max_tokens (never the key)."""
        blob = json.dumps({"url": self._url, "model": self.cfg.model, "messages": messages,
                           "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, key: str) -> str | None:
        p = self._cache_path(key)
        if p is None or not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))["reply"]
        except (ValueError, KeyError, UnicodeDecodeError):
            return None

    # ----- public -------------------------------------------------------------------------------
    def complete(self, messages: Messages, parse: Callable[[str], Any] | None = None) -> Any:
        """The parsed reply to one chat (``parse(text)``; ``None`` when every try gave a reply ``parse`` rejects).

        ``parse`` raises ``ValueError`` on a reply it cannot read; that reply is retried and never cached.
        Transport failures are retried; when the tries run out, one :class:`UniversalityError`.
        """
        parse = parse or (lambda s: s)
        key = self.cache_key(messages)
        hit = self._cached(key)
        if hit is not None:
            try:
                out = parse(hit)
                with self._lock:
                    self.n_cached += 1
                return out
            except ValueError:
                pass
        last = ""
        unparsable = False
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(min(self.cfg.max_backoff, getattr(last, "retry_after", None) or self.cfg.backoff * 2 ** (attempt - 1)))
            try:
                text = self._post(messages)
            except _Retry as e:
                last, unparsable = e, False
                continue
            try:
                out = parse(text)
            except ValueError as e:
                last, unparsable = _Retry(f"a reply that could not be read ({e})"), True
                continue
            p = self._cache_path(key)
            if p is not None:
                atomic_write_json(p, {"model": self.cfg.model, "messages": messages, "reply": text})
            return out
        if unparsable:
            return None
        raise UniversalityError(f"endpoint {self._url} failed {self.cfg.max_retries + 1} tries (last: {last}); "
                                "check that the server is running and reachable, then rerun to resume")

    def complete_many(self, chats: Sequence[Messages], parse: Callable[[str], Any] | Sequence[Callable] | None = None) -> list[Any]:
        """:meth:`complete` for every chat, ``concurrency`` at a time; results in input order.

        ``parse`` is one parser for every reply, or one per chat. The first :class:`UniversalityError` stops new
        requests and is raised once those in flight are done; every reply that arrived before it is in the cache.
        """
        out: list[Any] = [None] * len(chats)
        if not chats:
            return out
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            parsers = list(parse) if isinstance(parse, (list, tuple)) else [parse] * len(chats)
            futs = {pool.submit(self.complete, c, p): i for i, (c, p) in enumerate(zip(chats, parsers))}
            done, pending = wait(futs, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            error = None
            for f in list(done) + [f for f in pending if not f.cancelled()]:
                try:
                    out[futs[f]] = f.result()
                except UniversalityError as e:
                    error = error or e
            if error is not None:
                raise error
        return out

    def check(self) -> None:
        """Fail early with one sentence when the endpoint is unreachable, refuses the key or does not list the model.

        Asks ``GET /models``; an endpoint without that route is not held against (the first request tells).
        """
        import httpx

        last: Exception | None = None
        for attempt in range(min(self.cfg.max_retries, 2) + 1):
            if attempt:
                time.sleep(min(self.cfg.max_backoff, self.cfg.backoff * 2 ** (attempt - 1)))
            try:
                r = self._http.get(f"{self._url}/models", headers=self._headers())
                break
            except httpx.TransportError as e:
                last = e
        else:
            raise UniversalityError(f"endpoint {self._url} cannot be reached ({_reason(last)}); start the server or fix the "
                                    "endpoint URL")
        if r.status_code in (401, 403):
            raise self._fatal_status(r.status_code, r.text)  # type: ignore[misc]
        if r.status_code != 200:
            return
        try:
            ids = [m["id"] for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return
        if ids and self.cfg.model not in ids:
            raise UniversalityError(f"endpoint {self._url} does not serve model '{self.cfg.model}'; it lists "
                                    f"{', '.join(ids[:10])}{' …' if len(ids) > 10 else ''}")


def _reason(e: Any) -> str:
    msg = " ".join(str(e).split()) if e is not None else ""
    return msg[:120] or type(e).__name__


def _retry_after(v: str | None) -> float | None:
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None
