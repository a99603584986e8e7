"""The ``universality`` command.

Subcommands: ``demo``, ``zoo``, ``cache``, ``train``, ``compare``, ``seeds``,
``induction``, ``off-by-one``, ``report``, ``eval``, ``explain``. Options may also come from a TOML or
``induction``, ``off-by-one``, ``lens``, ``steer``, ``report``. Options may also come from a TOML or
YAML file (``--config FILE``); options given on the command line win, unknown
keys are an error, and the resolved settings are saved as ``config.json`` in the
run directory. A user mistake prints one sentence on stderr and exits with 2;
nothing is written before the inputs have been checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ._errors import UniversalityError
from .cli_config import add_config_arguments, collect, config_fields, read_config_file

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One subcommand and its typed config, the source of its options (the job it runs is picked in :func:`_run`)."""

    name: str
    """Subcommand name."""
    help: str
    """One line shown in ``universality --help``."""
    config: str
    """Name of its config dataclass in :mod:`universality.jobs.config`."""
    writes: bool = True
    """Whether it takes ``--out`` (a run directory or an output folder)."""


COMMAND_TABLE = (
    Command("demo", "the whole pipeline offline on the tiny zoo", "DemoConfig"),
    Command("zoo", "train (or reuse) the tiny zoo models", "ZooConfig", writes=False),
    Command("cache", "extract hook activations of a model over a token stream", "CacheConfig"),
    Command("train", "train a dictionary on a cached activation store", "TrainConfig"),
    Command("compare", "features of two or more models on the same tokens, then a report", "CompareConfig"),
    Command("seeds", "seed stability of dictionaries on one model", "SeedsConfig"),
    Command("induction", "induction localisation per model", "CircuitsConfig"),
    Command("off-by-one", "write-lag profiles per layer", "CircuitsConfig"),
    Command("circuit", "attribution graphs through per-block transcoders, compared across models", "CircuitGraphConfig"),
    Command("lens", "logit-lens and tuned-lens curves per model", "LensConfig"),
    Command("steer", "steering vectors from a prompt contrast and their dose-response curves", "SteerConfig"),
    Command("report", "render report.html and summary.md from a run directory's results.json", "ReportConfig", writes=False),
    Command("eval", "SAEBench metrics and sparse probing of dictionaries from any library on one model", "EvalConfig"),
    Command("explain", "explain and score dictionary features, compare explanations, write the feature browser", "ExplainConfig", writes=False),
)
COMMANDS = tuple(c.name for c in COMMAND_TABLE)


class _UsageError(Exception):
    """An argparse complaint, turned into one sentence by :func:`main`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401  (argparse hook)
        raise _UsageError(message)


def _config_class(cmd: Command) -> type:
    from .jobs import config

    return getattr(config, cmd.config)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command, its options generated from the typed configs (default: 'not given',
    so config files can fill them)."""
    from .jobs.config import RunOptions

    p = _Parser(prog="universality", description="Compare features and circuits across language models and seeds.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMAND_TABLE:
        cls = _config_class(cmd)
        sp = sub.add_parser(cmd.name, help=cmd.help, description=(cls.__doc__ or "").strip().replace("``", ""),
                            argument_default=argparse.SUPPRESS)
        add_config_arguments(sp, cls)
        run_opts = sp.add_argument_group("run options")
        add_config_arguments(run_opts, RunOptions, skip=_run_skip(cmd))
        run_opts.add_argument("--config", metavar="FILE", help="TOML or YAML file with options (command line wins)")
    return p


# ---- options and config files ------------------------------------------------------------------

def _run_skip(cmd: Command) -> tuple[str, ...]:
    """Run options a command does not take (``--out`` where it writes nothing)."""
    return () if cmd.writes else ("out",)


def _settings(args: argparse.Namespace, cmd: Command) -> tuple[type, dict, Any, str]:
    """Merge config-file values and explicit options (the command line wins) → (the command's config class, its given
    values, the :class:`~universality.jobs.config.RunOptions`, where the values came from)."""
    from .jobs.config import RunOptions, config_from_mapping

    cls = _config_class(cmd)
    kinds, run_kinds = config_fields(cls), config_fields(RunOptions, skip=_run_skip(cmd))
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    valid = set(kinds) | set(run_kinds)
    unknown = sorted(set(from_file) - valid)
    if unknown:
        raise UniversalityError(f"config file '{args.config}' has unknown key(s) {', '.join(unknown)}; "
                                f"valid keys for '{cmd.name}': {', '.join(sorted(valid))}")
    given = collect(args, kinds)
    run_given = collect(args, run_kinds)
    source = f"config file '{args.config}'" if getattr(args, "config", None) else "the options"
    run = config_from_mapping(RunOptions, {**{k: v for k, v in from_file.items() if k in run_kinds}, **run_given}, source)
    values = {k: v for k, v in {**{k: v for k, v in from_file.items() if k in kinds}, **given}.items() if v is not None}
    return cls, values, run, source


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
    """Resolve the options, check the output folder (writing nothing), build the config and run the command's job."""
    from ._device import resolve_device
    from ._progress import set_quiet
    from .jobs.config import config_from_mapping

    from . import _dist

    cmd = next(c for c in COMMAND_TABLE if c.name == args.command)
    cls, values, opts, source = _settings(args, cmd)
    set_quiet(opts.quiet)
    log = _log_fn(opts.quiet)
    if cmd.writes and _dist.launched() and cmd.name not in ("compare", "cache"):
        raise UniversalityError(f"'{cmd.name}' runs in one process; under torchrun only 'compare' and 'cache' run (WORLD_SIZE > 1 here)")
    out = _check_out(opts.out or f"runs/{cmd.name}") if cmd.writes else None
    cfg = config_from_mapping(cls, values, source)
    device = resolve_device(opts.device)
    if cmd.name == "report":
        from .reports import write_report

        files = write_report(cfg.run_dir)
        log(f"wrote {files.html} and {files.markdown}")
        return 0
    if cmd.name == "explain":
        from .jobs.explain import explain_job

        print(str(explain_job(cfg, device, log)))
        return 0
    if cmd.name == "zoo":
        from . import zoo

        for name, path in zoo.ensure_zoo(cfg.preset, cfg.home, only=cfg.only).items():
            print(f"{name}\t{path}")
        return 0
    from . import jobs

    if cmd.name in ("induction", "off-by-one"):
        jobs.circuits_job(cmd.name, cfg, out, device, log)
    elif cmd.name in ("compare", "cache"):
        with _dist.session(device) as device:
            (jobs.compare_job if cmd.name == "compare" else jobs.cache_job)(cfg, out, device, log)
    else:
        job = {"demo": jobs.demo_job, "seeds": jobs.seeds_job, "train": jobs.train_job, "circuit": jobs.circuit_job, "eval": jobs.eval_job,
               "lens": jobs.lens_job, "steer": jobs.steer_job}[cmd.name]
        job(cfg, out, device, log)
    print(str(out))
    return 0


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
