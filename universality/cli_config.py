"""Command-line options generated from the typed config dataclasses, and config files (TOML/YAML) read into them.

Each dataclass field becomes one option: ``n_latents`` → ``--n-latents``; its type picks the parser (``int``,
``float``, ``str``; ``bool`` → a switch, ``--no-NAME`` when it defaults to true; ``list[int|float|str]`` →
a comma-separated value; ``dict[str, str]`` → a repeatable ``NAME=PATH``); the field's docstring is the help,
followed by the dataclass default. Field metadata from :func:`universality.jobs.config.cli` marks positional
arguments, renamed or repeatable flags and choices. Options default to *not given*
(``argparse.SUPPRESS``), so a config file can fill what the command line leaves out.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Collection

from ._errors import UniversalityError


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Field name → its docstring (the string literal right after the field), whitespace collapsed, for ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unoptional(tp: Any) -> Any:
    """``X`` for ``X | None`` / ``Optional[X]``; ``tp`` otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _list_of(kind: type, example: str):
    def parse(text: str) -> list:
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            noun = {int: "integers", float: "numbers", str: "words"}[kind]
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of {noun}, e.g. {example}") from None

    parse.__name__ = f"list of {kind.__name__}"
    return parse


_LISTS = {int: _list_of(int, "0,1,2"), float: _list_of(float, "0,0.5,1"), str: _list_of(str, "a,b")}


def _pair(text: str) -> tuple[str, str]:
    """``NAME=PATH`` → ``(NAME, PATH)``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=PATH")
    k, v = text.split("=", 1)
    return k, v


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None or value == "" or value == [] or value == {} or isinstance(value, bool):
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return f" (default: {value})"


def _kind(tp: Any, meta: dict) -> str:
    """How a field of (un-optional) type ``tp`` is given on the command line."""
    origin = typing.get_origin(tp)
    if meta.get("positional"):
        return "positional"
    if tp is bool:
        return "bool"
    if origin is dict:
        return "dict"
    if origin is list:
        return "list"
    if tp in (int, float, str):
        return tp.__name__
    raise TypeError(f"type {tp!r} has no command-line form")


def config_fields(cls: type, skip: Collection[str] = ()) -> dict[str, str]:
    """Field name → how it is given on the command line (``positional``, ``bool``, ``dict``, ``list``, ``int``, ...)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _kind(_unoptional(hints[f.name]), dict(f.metadata.get("cli") or {}))
            for f in dataclasses.fields(cls) if f.name not in skip}


def add_config_arguments(parser: Any, cls: type, skip: Collection[str] = ()) -> dict[str, str]:
    """Add one argument per field of the dataclass ``cls`` (except ``skip``) to ``parser`` (or an argument group).

    Returns :func:`config_fields` of ``cls``, which :func:`collect` needs to read the parsed values back.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    kinds = config_fields(cls, skip)
    for f in dataclasses.fields(cls):
        if f.name not in kinds:
            continue
        meta = dict(f.metadata.get("cli") or {})
        tp = _unoptional(hints[f.name])
        args = typing.get_args(tp)
        elem = args[0] if args else str
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        text = docs.get(f.name, "").replace("``", "")
        if kinds[f.name] == "bool" and f.default is True:
            text = f"turn off (on by default): {text}"
        extra: dict[str, Any] = {"help": (text + _default_text(f)).replace("%", "%%")}
        if meta.get("metavar"):
            extra["metavar"] = meta["metavar"]
        if meta.get("choices"):
            extra["choices"] = meta["choices"]
        kind = kinds[f.name]
        if kind == "positional":
            is_list = typing.get_origin(tp) is list
            parser.add_argument(f.name, nargs="*" if is_list else "?", type=elem if is_list else tp, **extra)
        elif kind == "bool":
            if f.default is True:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", **extra)
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", **extra)
        elif kind == "dict":
            parser.add_argument(flag, dest=f.name, type=_pair, action="append", **extra)
        elif kind == "list" and meta.get("repeat"):
            parser.add_argument(flag, dest=f.name, type=elem, action="append", **extra)
        elif kind == "list":
            parser.add_argument(flag, dest=f.name, type=_LISTS[elem], **extra)
        else:
            parser.add_argument(flag, dest=f.name, type=tp, **extra)
    return kinds


def collect(args: argparse.Namespace, kinds: dict[str, str]) -> dict[str, Any]:
    """The options given on the command line for the fields in ``kinds`` (``NAME=PATH`` lists become dicts)."""
    out = {}
    for name, kind in kinds.items():
        if name in vars(args):
            value = getattr(args, name)
            out[name] = dict(value) if kind == "dict" else value
    return out


def read_config_file(path: str) -> dict:
    """Options from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file as a flat mapping (dashes in keys read as underscores)."""
    p = Path(path)
    if not p.is_file():
        raise UniversalityError(f"config file '{path}' does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise UniversalityError(f"config file '{path}' is TOML, which needs Python 3.11 or the 'tomli' package; "
                                        "use a YAML file instead") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UniversalityError(f"config file '{path}' is not valid TOML ({e})") from None
    elif p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UniversalityError(f"config file '{path}' is not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        raise UniversalityError(f"config file '{path}' must end in .toml, .yaml or .yml")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UniversalityError(f"config file '{path}' must hold a table of options at the top level")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
