"""The ``universality`` command.

Subcommands: ``demo``, ``zoo``, ``cache``, ``train``, ``compare``, ``seeds``,
``induction``, ``off-by-one``, ``report``. Options may also come from a TOML or
YAML file (``--config FILE``); options given on the command line win, unknown
keys are an error, and the resolved settings are saved as ``config.json`` in the
run directory. A user mistake prints one sentence on stderr and exits with 2;
nothing is written before the inputs have been checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ._errors import UniversalityError

COMMANDS = ("demo", "zoo", "cache", "train", "compare", "seeds", "induction", "off-by-one", "report")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """An argparse complaint, turned into one sentence by :func:`main`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401  (argparse hook)
        raise _UsageError(message)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers, e.g. 0,1,2") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers, e.g. 0,0.5,1") from None


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=PATH")
    k, v = text.split("=", 1)
    return k, v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command (options default to 'not given', so config files can fill them)."""
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where models and dictionaries run (default auto)")
    common.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    common.add_argument("--config", metavar="FILE", help="TOML or YAML file with options (command line wins)")
    p = _Parser(prog="universality", description="Compare features and circuits across language models and seeds.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common], argument_default=argparse.SUPPRESS)

    d = cmd("demo", "the whole pipeline offline on the tiny zoo")
    d.add_argument("--out", help="run directory (default runs/demo)")
    d.add_argument("--corpus", help="corpus for activations: a text file, folder, JSONL or 'default'")
    d.add_argument("--quick", action="store_true", help="reduced version (about two minutes)")
    d.add_argument("--zoo-preset", dest="zoo_preset", help="zoo preset (default: default; test with --quick)")
    d.add_argument("--zoo-home", dest="zoo_home", help="zoo folder (default $UNIVERSALITY_HOME or ~/.cache/universality)")

    z = cmd("zoo", "train (or reuse) the tiny zoo models")
    z.add_argument("--preset", help="test, default or large (default: default)")
    z.add_argument("--home", help="zoo folder")
    z.add_argument("--only", type=_words, help="comma-separated member names")

    c = cmd("cache", "extract hook activations of a model over a token stream")
    c.add_argument("model", nargs="?", help="checkpoint folder or hub id")
    c.add_argument("--hook", action="append", dest="hooks", help="hook name, e.g. blocks.2.resid_post (repeatable)")
    c.add_argument("--tokens", type=int, help="number of tokens (default 16384)")
    c.add_argument("--seq-len", dest="seq_len", type=int, help="tokens per sequence (default 64)")
    c.add_argument("--corpus", help="corpus (default: the stdlib source)")
    c.add_argument("--out", help="store folder")

    t = cmd("train", "train a dictionary on a cached activation store")
    t.add_argument("store", nargs="?", help="activation store folder (from 'universality cache')")
    t.add_argument("--hook", help="hook of the store to train on (default: its only hook)")
    t.add_argument("--kind", help="topk, batchtopk, relu or jumprelu (default topk)")
    t.add_argument("--n-latents", dest="n_latents", type=int, help="latents (default 4096)")
    t.add_argument("--k", type=int, help="active latents per token (default 32)")
    t.add_argument("--seed", type=int, help="seed (default 0)")
    t.add_argument("--n-tokens", dest="n_tokens", type=int, help="training tokens (default: the trainer's, 300 batches)")
    t.add_argument("--batch-size", dest="batch_size", type=int, help="tokens per step (default 4096)")
    t.add_argument("--out", help="dictionary folder")

    cp = cmd("compare", "features of two or more models on the same tokens, then a report")
    cp.add_argument("models", nargs="*", help="two or more checkpoint folders or hub ids")
    cp.add_argument("--names", type=_words, help="comma-separated labels")
    cp.add_argument("--hook", help="resid_post (default), resid_pre, mixer_out, mlp_out, ...")
    cp.add_argument("--layers", type=_floats, help="relative depths 0..1 for the layer grid (default: every layer)")
    cp.add_argument("--n-tokens", dest="n_tokens", type=int)
    cp.add_argument("--seq-len", dest="seq_len", type=int)
    cp.add_argument("--kind")
    cp.add_argument("--n-latents", dest="n_latents", type=int)
    cp.add_argument("--k", type=int)
    cp.add_argument("--sae-epochs", dest="sae_epochs", type=int)
    cp.add_argument("--n-boot", dest="n_boot", type=int)
    cp.add_argument("--n-boot-refs", dest="n_boot_refs", type=int, help="bootstrap resamples for floor and skyline lines")
    cp.add_argument("--family-threshold", dest="family_threshold", type=float)
    cp.add_argument("--no-floor", dest="floor", action="store_false", help="skip the random-init floor")
    cp.add_argument("--floor-model", dest="floor_models", type=_pair, action="append", help="NAME=PATH of an untrained copy")
    cp.add_argument("--seed-model", dest="seed_models", type=_pair, action="append", help="NAME=PATH of another model seed")
    cp.add_argument("--top-matches", dest="top_matches", type=int)
    cp.add_argument("--corpus")
    cp.add_argument("--seed", type=int)
    cp.add_argument("--out", help="run directory (default runs/compare)")

    s = cmd("seeds", "seed stability of dictionaries on one model")
    s.add_argument("model", nargs="?", help="checkpoint folder or hub id")
    s.add_argument("--seeds", type=_ints, help="comma-separated seeds (default 0,1,2)")
    s.add_argument("--kinds", type=_words, help="comma-separated kinds (default topk,relu)")
    s.add_argument("--n-latents", dest="n_latents", type=_ints, help="comma-separated sizes (default 512)")
    s.add_argument("--k", type=int)
    s.add_argument("--hook", help="per-block hook (default mlp_out)")
    s.add_argument("--layer", type=float, help="relative depth 0..1 (default 0.5)")
    s.add_argument("--n-tokens", dest="n_tokens", type=int)
    s.add_argument("--seq-len", dest="seq_len", type=int)
    s.add_argument("--sae-epochs", dest="sae_epochs", type=int)
    s.add_argument("--threshold", type=float)
    s.add_argument("--corpus")
    s.add_argument("--out", help="run directory (default runs/seeds)")

    for name, what in (("induction", "induction localisation per model"), ("off-by-one", "write-lag profiles per layer")):
        a = cmd(name, what)
        a.add_argument("models", nargs="*", help="checkpoint folders or hub ids")
        a.add_argument("--n-prompts", dest="n_prompts", type=int, help="prompts (default 16)")
        a.add_argument("--out", help=f"run directory (default runs/{name})")

    r = cmd("report", "render report.html and summary.md from a run directory's results.json")
    r.add_argument("run_dir", nargs="?", help="run directory")
    return p


# ---- config files ------------------------------------------------------------------------------

def read_config_file(path: str) -> dict:
    """Options from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file as a flat mapping."""
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


_RUN_KEYS = ("out", "device", "quiet")


def _settings(args: argparse.Namespace, cls: type | None, allowed: Sequence[str] = ()) -> tuple[dict, dict]:
    """Merge config-file values and explicit options → (settings for ``cls``, run options: out/device/quiet)."""
    from dataclasses import fields

    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "version")}
    for key in ("floor_models", "seed_models"):
        if key in given:
            given[key] = dict(given[key])
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    valid = set(allowed) | set(_RUN_KEYS) | ({f.name for f in fields(cls)} if cls else set())
    unknown = sorted(set(from_file) - valid)
    if unknown:
        raise UniversalityError(f"config file '{args.config}' has unknown key(s) {', '.join(unknown)}; "
                                f"valid keys for '{args.command}': {', '.join(sorted(valid))}")
    merged = {**from_file, **given}
    run = {k: merged.pop(k) for k in _RUN_KEYS if k in merged}
    return merged, run


def _check_out(path: str) -> Path:
    """Fail early, writing nothing, when ``path`` cannot become a writable folder."""
    p = Path(path)
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UniversalityError(f"output folder '{path}' cannot be created because '{probe}' is a file; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UniversalityError(f"output folder '{path}' is not writable; choose a writable path")
    return p


# ---- commands ------------------------------------------------------------------------------------

def _log_fn(quiet: bool):
    def log(msg: str) -> None:
        from . import _dist  # torchrun: only rank 0 prints

        if not quiet and _dist.is_main():
            print(f"[universality] {msg}", file=sys.stderr, flush=True)

    return log


def _run(args: argparse.Namespace) -> int:
    from ._device import resolve_device
    from ._progress import set_quiet
    from .jobs import CompareConfig, DemoConfig, SeedsConfig, circuits_job, compare_job, demo_job, seeds_job
    from .jobs.config import config_from_mapping

    cmd = args.command
    cls = {"demo": DemoConfig, "compare": CompareConfig, "seeds": SeedsConfig}.get(cmd)
    allowed = {"zoo": ("preset", "home", "only"), "cache": ("model", "hooks", "tokens", "seq_len", "corpus"),
               "train": ("store", "hook", "kind", "n_latents", "k", "seed", "n_tokens", "batch_size"), "induction": ("models", "n_prompts"),
               "off-by-one": ("models", "n_prompts"), "report": ("run_dir",)}.get(cmd, ())
    values, run_opts = _settings(args, cls, allowed)
    quiet = bool(run_opts.get("quiet", False))
    set_quiet(quiet)
    log = _log_fn(quiet)
    device = resolve_device(run_opts.get("device", "auto"))
    source = f"config file '{args.config}'" if getattr(args, "config", None) else "the options"

    if cmd == "report":
        from .reports import write_report

        if not values.get("run_dir"):
            raise UniversalityError("report needs a run directory that holds a results.json")
        files = write_report(values["run_dir"])
        log(f"wrote {files.html} and {files.markdown}")
        return 0
    if cmd == "zoo":
        from . import zoo

        paths = zoo.ensure_zoo(values.get("preset", "default"), values.get("home"), only=values.get("only"))
        for name, path in paths.items():
            print(f"{name}\t{path}")
        return 0

    from . import _dist  # torchrun: compare and cache only, one process group per command

    if _dist.launched() and cmd not in ("compare", "cache"):
        raise UniversalityError(f"'{cmd}' runs in one process; under torchrun only 'compare' and 'cache' run (WORLD_SIZE > 1 here)")
    out = _check_out(run_opts.get("out") or f"runs/{cmd}")
    if cmd == "demo":
        cfg = config_from_mapping(DemoConfig, values, source)
        demo_job(cfg, out, device, log)
    elif cmd == "compare":
        cfg = config_from_mapping(CompareConfig, values, source)
        with _dist.session(device) as device:
            compare_job(cfg, out, device, log)
    elif cmd == "seeds":
        cfg = config_from_mapping(SeedsConfig, {k: v for k, v in values.items() if v is not None}, source)
        seeds_job(cfg, out, device, log)
    elif cmd in ("induction", "off-by-one"):
        models = values.get("models") or []
        if not models:
            raise UniversalityError(f"{cmd} needs at least one model: a checkpoint folder or a hub id")
        circuits_job(cmd, models, out, device, log, n_prompts=int(values.get("n_prompts", 16)))
    elif cmd == "cache":
        with _dist.session(device) as device:
            _cache(values, out, device, log)
    elif cmd == "train":
        _train(values, out, device, log)
    print(str(out))
    return 0


def _cache(values: dict, out: Path, device: Any, log) -> None:
    from .activations import cache_activations
    from .data import StreamConfig, context_length, make_stream
    from .hosts import load_host
    from .jobs.common import load_corpus_checked

    if not values.get("model"):
        raise UniversalityError("cache needs a model: a checkpoint folder or a hub id")
    hooks = values.get("hooks") or []
    if not hooks:
        raise UniversalityError("cache needs at least one --hook, e.g. --hook blocks.0.resid_post")
    host = load_host(values["model"], device=str(device))
    corpus = load_corpus_checked(values.get("corpus", "default"))
    n_ctx = context_length(host)
    stream = make_stream(corpus, host.tokenizer, StreamConfig.for_tokens(int(values.get("tokens", 16384)),
                                                                         seq_len=int(values.get("seq_len", 64))), max_len=n_ctx)
    store = cache_activations(host, hooks, stream, out)
    log(f"cached {store.n_rows} rows of {', '.join(hooks)} in {out}")


def _train(values: dict, out: Path, device: Any, log) -> None:
    from . import sae
    from .activations import ActivationStore

    if not values.get("store"):
        raise UniversalityError("train needs an activation store folder written by 'universality cache'")
    store = ActivationStore(values["store"])
    hook = values.get("hook")
    x = store.read(hook, masked=True)
    coder = sae.fit(x, kind=values.get("kind", "topk"), n_latents=int(values.get("n_latents", 4096)), k=int(values.get("k", 32)),
                    seed=int(values.get("seed", 0)), device=str(device), hook=hook, n_tokens=values.get("n_tokens"),
                    batch_size=int(values.get("batch_size", 4096)))
    coder.save(out)
    log(f"saved the dictionary in {out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``universality`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "version", False):
            from . import __version__

            print(__version__)
            return 0
        if not args.command:
            raise _UsageError(f"no command given; use one of {', '.join(COMMANDS)}")
        return _run(args)
    except _UsageError as e:
        msg = " ".join(str(e).split())
        if msg.startswith("argument COMMAND: invalid choice"):
            bad = msg.split("invalid choice: ", 1)[1].split(" ")[0]
            msg = f"unknown command {bad}; use one of {', '.join(COMMANDS)}"
        print(f"universality: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except UniversalityError as e:
        print(f"universality: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("universality: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # --help
        return int(e.code or 0) if isinstance(e.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
