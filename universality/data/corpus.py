"""Corpora: ordered lists of named text documents with a deterministic train/held-out split.

The offline default is the source of the running interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``, ``.py`` files only, never site-packages).
User corpora are a text file, a folder of text files, a JSONL file with a text
field, or a Hugging Face dataset saved with ``save_to_disk`` (or a hub name when
online). Every corpus carries a fingerprint of its document names and contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .._errors import UniversalityError
from .._io import fingerprint

SPLITS = ("train", "heldout", "all")
_TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text", ".tex", ".html", ".c", ".h", ".js", ".json", ".csv", ".yaml", ".yml", "")
_EXCLUDED_DIRS = ("site-packages", "dist-packages", "__pycache__")
_PIECE_CHARS = 8000


@dataclass(frozen=True)
class Document:
    """One text document of a corpus."""

    name: str
    """Stable identifier (relative path, ``file#k``, or ``dataset[i]``); the split is decided by its hash."""
    text: str
    """The document's text."""


@dataclass(frozen=True)
class CorpusConfig:
    """Where a corpus comes from and how it is split."""

    source: str = "default"
    """``"default"`` (stdlib source), a text file, a folder, a ``.jsonl`` file, a ``save_to_disk`` folder, or ``hf:NAME``."""
    text_field: str = "text"
    """Field holding the text in JSONL records and Hugging Face datasets."""
    heldout_percent: float = 10.0
    """Share of documents (by name hash) in the held-out split, in percent (0 < p < 100)."""
    hf_split: str = "train"
    """Split to read when ``source`` is a Hugging Face ``DatasetDict`` or a hub name."""

    def __post_init__(self):
        if not isinstance(self.source, (str, os.PathLike)) or not str(self.source):
            raise UniversalityError("corpus source must be 'default', a path, or 'hf:NAME'; got an empty value")
        if not 0.0 < float(self.heldout_percent) < 100.0:
            raise UniversalityError(f"heldout_percent {self.heldout_percent} is not valid; use a value strictly between 0 and 100")
        if not self.text_field:
            raise UniversalityError("text_field must name the field that holds the text, e.g. 'text'")


@dataclass
class Corpus:
    """A list of documents with a deterministic train/held-out split and a fingerprint."""

    documents: list[Document]
    """All documents, in a stable order (sorted by name for folders and the default corpus)."""
    source: str
    """Human-readable origin (path or ``stdlib:<version>``)."""
    heldout_percent: float = 10.0
    """Share of documents in the held-out split, in percent."""
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.documents or not any(d.text.strip() for d in self.documents):
            raise UniversalityError(f"corpus '{self.source}' is empty; give a corpus with at least one non-empty document")

    @property
    def fingerprint(self) -> str:
        """16-hex hash of every document's name and content (and the split share)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for d in self.documents:
                h.update(d.name.encode("utf-8", "surrogatepass") + b"\0")
                h.update(hashlib.sha256(d.text.encode("utf-8", "surrogatepass")).digest())
            self._fingerprint = fingerprint({"docs": h.hexdigest(), "heldout_percent": self.heldout_percent})
        return self._fingerprint

    def split(self, name: str) -> list[Document]:
        """Documents of split ``name`` (``"train"``, ``"heldout"`` or ``"all"``), decided by a hash of each name."""
        if name not in SPLITS:
            raise UniversalityError(f"corpus split '{name}' is not valid; use one of {', '.join(SPLITS)}")
        if name == "all":
            return list(self.documents)
        want_heldout = name == "heldout"
        docs = [d for d in self.documents if is_heldout(d.name, self.heldout_percent) == want_heldout]
        if not docs:
            raise UniversalityError(
                f"the {name} split of corpus '{self.source}' is empty ({len(self.documents)} documents in all); "
                "add documents or use split='all'"
            )
        return docs

    def n_chars(self, split: str = "all") -> int:
        """Total characters in ``split``."""
        return sum(len(d.text) for d in self.split(split))

    def describe(self) -> dict:
        """JSON-able summary: source, document count, characters, fingerprint."""
        return {"source": self.source, "n_documents": len(self.documents), "n_chars": self.n_chars(),
                "heldout_percent": self.heldout_percent, "fingerprint": self.fingerprint}


def is_heldout(name: str, heldout_percent: float = 10.0) -> bool:
    """Whether document ``name`` belongs to the held-out split: SHA-256 of the name, mod 10000, below the share."""
    bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:8], "big") % 10000
    return bucket < heldout_percent * 100


def default_corpus(heldout_percent: float = 10.0) -> Corpus:
    """The offline default corpus: every ``.py`` file of this interpreter's standard library (no site-packages).

    Documents are named by their path relative to the stdlib folder and sorted,
    so the corpus (and its fingerprint) depends only on the Python installation.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise UniversalityError(f"the standard-library folder '{root}' of this interpreter is missing; pass a corpus path instead")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
        files += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    docs = []
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        text = _read_text(f, strict=False)
        if text is not None and text.strip():
            docs.append(Document(f.relative_to(root).as_posix(), text))
    version = "%d.%d.%d" % tuple(__import__("sys").version_info[:3])
    return Corpus(docs, source=f"stdlib:{version}", heldout_percent=heldout_percent)


def load_corpus(source: str | os.PathLike | CorpusConfig | Corpus | None = "default", **kw) -> Corpus:
    """Load a corpus from ``source`` (see :class:`CorpusConfig`); extra keywords fill the config.

    Returns a :class:`Corpus`; raises :class:`UniversalityError` when the source is
    missing, unreadable, of an unknown kind, or holds no text.
    """
    if isinstance(source, Corpus):
        return source
    cfg = source if isinstance(source, CorpusConfig) else CorpusConfig(source="default" if source is None else str(source), **kw)
    src = str(cfg.source)
    if src in ("default", "stdlib"):
        return default_corpus(cfg.heldout_percent)
    if src.startswith("hf:"):
        return _from_hf_hub(src[3:], cfg)
    path = Path(src).expanduser()
    if not path.exists():
        raise UniversalityError(
            f"corpus '{src}' does not exist; give 'default', a text file, a folder, a .jsonl file, a save_to_disk folder or 'hf:NAME'"
        )
    if path.is_dir():
        if any((path / m).is_file() for m in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return _from_hf_disk(path, cfg)
        return _from_folder(path, cfg)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _from_jsonl(path, cfg)
    return _from_text_file(path, cfg)


# ----- readers -----------------------------------------------------------------------

def _read_text(path: Path, strict: bool = True) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as e:
        if strict:
            raise UniversalityError(f"corpus file '{path}' cannot be read ({e.strerror}); check its permissions") from None
        return None
    if b"\0" in data[:8192]:
        if strict:
            raise UniversalityError(f"corpus file '{path}' looks binary (contains NUL bytes); give UTF-8 text")
        return None
    return data.decode("utf-8", errors="replace")


def _pieces(name: str, text: str) -> list[Document]:
    """Cut one long text into documents of about ``_PIECE_CHARS`` characters at paragraph breaks."""
    paragraphs = text.split("\n\n")
    out, buf, size = [], [], 0
    for p in paragraphs:
        buf.append(p)
        size += len(p) + 2
        if size >= _PIECE_CHARS:
            out.append("\n\n".join(buf))
            buf, size = [], 0
    if buf:
        out.append("\n\n".join(buf))
    return [Document(f"{name}#{k}", t) for k, t in enumerate(out) if t.strip()]


def _from_text_file(path: Path, cfg: CorpusConfig) -> Corpus:
    text = _read_text(path)
    return Corpus(_pieces(path.name, text or ""), source=str(path), heldout_percent=cfg.heldout_percent)


def _from_folder(path: Path, cfg: CorpusConfig) -> Corpus:
    docs = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if any(part.startswith(".") for part in f.relative_to(path).parts) or f.suffix.lower() not in _TEXT_SUFFIXES:
            continue
        text = _read_text(f, strict=False)
        if text and text.strip():
            docs.append(Document(rel, text))
    if not docs:
        raise UniversalityError(f"corpus folder '{path}' holds no readable text files (looked for {', '.join(s for s in _TEXT_SUFFIXES if s)})")
    return Corpus(docs, source=str(path), heldout_percent=cfg.heldout_percent)


def _from_jsonl(path: Path, cfg: CorpusConfig) -> Corpus:
    text = _read_text(path) or ""
    docs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise UniversalityError(f"line {lineno} of JSONL corpus '{path}' is not valid JSON; each line must be one JSON object") from None
        if not isinstance(rec, dict) or cfg.text_field not in rec:
            raise UniversalityError(
                f"line {lineno} of JSONL corpus '{path}' has no '{cfg.text_field}' field; set text_field to the field holding the text"
            )
        value = rec[cfg.text_field]
        if not isinstance(value, str):
            raise UniversalityError(f"field '{cfg.text_field}' on line {lineno} of '{path}' is {type(value).__name__}, not a string")
        if value.strip():
            docs.append(Document(f"{path.name}:{lineno}", value))
    return Corpus(docs, source=str(path), heldout_percent=cfg.heldout_percent)


def _texts_from_dataset(ds, cfg: CorpusConfig, where: str) -> list[Document]:
    import datasets

    if isinstance(ds, (datasets.DatasetDict, dict)):
        if cfg.hf_split not in ds:
            raise UniversalityError(f"dataset '{where}' has no split '{cfg.hf_split}'; available: {', '.join(ds.keys())}")
        ds = ds[cfg.hf_split]
    columns = getattr(ds, "column_names", None) or []
    if cfg.text_field not in columns:
        raise UniversalityError(f"dataset '{where}' has no column '{cfg.text_field}'; columns: {', '.join(columns)}")
    return [Document(f"{where}[{i}]", t) for i, t in enumerate(ds[cfg.text_field]) if isinstance(t, str) and t.strip()]


def _need_datasets():
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UniversalityError("reading a Hugging Face dataset needs the 'datasets' package; install it with pip install datasets") from None
    return datasets


def _from_hf_disk(path: Path, cfg: CorpusConfig) -> Corpus:
    datasets = _need_datasets()
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises many types for a damaged folder
        raise UniversalityError(f"dataset folder '{path}' could not be read with load_from_disk ({type(e).__name__})") from None
    return Corpus(_texts_from_dataset(ds, cfg, path.name), source=str(path), heldout_percent=cfg.heldout_percent)


def _from_hf_hub(name: str, cfg: CorpusConfig) -> Corpus:
    datasets = _need_datasets()
    try:
        ds = datasets.load_dataset(name, split=cfg.hf_split)
    except Exception as e:
        raise UniversalityError(f"dataset 'hf:{name}' could not be loaded ({type(e).__name__}); check the name and that the hub is reachable") from None
    return Corpus(_texts_from_dataset(ds, cfg, name), source=f"hf:{name}", heldout_percent=cfg.heldout_percent)


def corpus_from_texts(texts: Iterable[str] | Sequence[str], name: str = "texts", heldout_percent: float = 10.0) -> Corpus:
    """Build a corpus from in-memory strings (documents named ``name[i]``)."""
    docs = [Document(f"{name}[{i}]", t) for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    return Corpus(docs, source=name, heldout_percent=heldout_percent)
