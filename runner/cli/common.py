"""What the verbs share: option spellings, the error line, one-step runs and the ``--out`` rule.

Every verb spells ``--results``, ``--artifacts``, ``--set``, ``--local``/``--address`` and
``--force`` the same way, runs a single step through the same driver as ``fprun run`` (so its row
gets provenance and a re-run is skipped), logs on stderr and prints results on stdout. One
``--out`` rule (docs/cli.md): a new path or an empty folder, refused when it holds something
unless ``--force``, and checked for writability before any work starts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from tasks.errors import ConfigError, FprunError

Results = Annotated[str, typer.Option("--results", help="results root (folder or pyarrow.fs URI)")]
Artifacts = Annotated[str, typer.Option("--artifacts", help="artifacts root (shared folder)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a config key: a.b=value (repeatable)")
]
Local = Annotated[
    bool, typer.Option("--local", help="run in this process (the reference executor), no Ray")
]
Address = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (default: $RAY_ADDRESS)")
]
Force = Annotated[bool, typer.Option("--force", help="replace what --out already holds")]
AllowPickle = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="accept a pickle checkpoint you trust (it can run code): converted once to "
        "safetensors in the fprun cache",
    ),
]
DEFAULT_RESULTS = "./fprun-results"
DEFAULT_ARTIFACTS = "./fprun-artifacts"
DEFAULT_REPORT = "./fprun-report"  # fprun demo's HTML report
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_app(app: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code: bad input of any kind is one line on stderr, 2.

    Typer's own usage errors (an unknown option, a missing argument, a value of the wrong type)
    are folded to the same one line as fprun's :class:`FprunError` family.
    """
    from tasks.progress import quiet_third_party

    quiet_third_party()  # env set here reaches the Ray workers this process starts
    command = typer.main.get_command(app)
    try:
        argv = list(args) if args is not None else None
        rv = command.main(args=argv, prog_name="fprun", standalone_mode=False)
    except FprunError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        print(f"error: {usage_line(exc)}", file=sys.stderr)
        return 2
    return rv if isinstance(rv, int) else 0


def usage_line(exc: Any) -> str:
    """A typer usage error as fprun's one line, with a numeric option's allowed range."""
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path} --help" if ctx is not None else "fprun --help"
    text = " ".join(exc.format_message().split()).rstrip(".")
    text = text.replace("Input should be", "must be")
    param = getattr(exc, "param", None)
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if lo is not None and hi is not None:
        return f"{text}; use {lo} to {hi} (see '{where}')"
    if lo is not None or hi is not None:
        return f"{text}; use a value {'>=' if lo is not None else '<='} {lo if hi is None else hi}"
    return f"{text}; see '{where}'"


def _is_usage_error(exc: BaseException) -> bool:
    # Typer vendors click and exports only BadParameter; UsageError is its public base class.
    return any(c.__name__ == "UsageError" for c in type(exc).__mro__) and hasattr(
        exc, "format_message"
    )


def log_err(line: str) -> None:
    """Logs go to stderr, results to stdout."""
    typer.echo(line, err=True)


def configs_dir() -> Path:
    """configs/ of the checkout fprun runs from (editable install), else of the current folder."""
    for cand in (REPO_ROOT / "configs", Path.cwd() / "configs"):
        if cand.is_dir():
            return cand
    raise ConfigError("no configs/ folder found", "run fprun from its checkout")


def check_executor(local: bool, address: str | None) -> None:
    """``--local`` and ``--address`` exclude each other."""
    if local and address:
        raise ConfigError("--local and --address exclude each other", "pass only one")


def finish_run(result: Any) -> None:
    """Print an experiment's summary; exit 1 when a step failed or was blocked."""
    if result.text:
        typer.echo(result.text)
    if result.summary is not None and not result.summary.ok:
        failed = len(result.summary.failed) + len(result.summary.blocked)
        log_err(f"{failed} step(s) failed or were blocked; fix and re-run to resume")
        raise typer.Exit(1)


def run_single_step(
    step: Any,
    results: str,
    artifacts: str,
    *,
    local: bool = False,
    address: str | None = None,
) -> Path:
    """Execute a one-step plan; return the step's artifact folder (exit 1 on failure).

    In this process unless ``--address`` (or ``$RAY_ADDRESS`` without ``--local``) names a Ray
    cluster: a single step gains nothing from a private Ray instance but its start-up time.
    """
    from runner.exec.driver import artifact_dir
    from runner.exec.run import execute_with
    from runner.plan import Plan

    check_executor(local, address)
    summary = execute_with(
        Plan([step]), results, artifacts, local=local, address=address, default_local=True
    )
    if not summary.ok:
        log_err(f"step {step.step_id} failed: {summary.failed.get(step.step_id, 'blocked')}")
        raise typer.Exit(1)
    return artifact_dir(artifacts, step)


def check_out(out: Path, *, force: bool = False, file: bool = False, flag: str = "--out") -> None:
    """The ``--out`` rule (tasks.files.check_out), checked before any work."""
    from tasks.files import check_out as check

    check(out, force=force, file=file, flag=flag)


def clear_out(out: Path) -> None:
    """Make room at ``out`` (checked by :func:`check_out`): remove an empty folder, or what
    ``--force`` allowed to be replaced."""
    import shutil

    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.is_dir():
        shutil.rmtree(out)


def place_out(src: Path, out: Path, *, link: bool = False) -> Path:
    """Put the artifact folder ``src`` at ``out``: a symlink, or hard links file by file (no extra
    disk; copies where links cannot cross filesystems). ``out`` was checked by check_out."""
    from tasks.files import atomic_copytree

    out = out.expanduser()
    clear_out(out)
    if link:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.symlink_to(src.resolve(), target_is_directory=True)
        return out
    return atomic_copytree(src, out, hardlink=True)


def place_files(src: Path, out: Path, names: Sequence[str] | Callable[[Path], bool]) -> Path:
    """Copy some files of the artifact folder ``src`` into a fresh ``out`` folder, whole."""
    import shutil

    from tasks.files import atomic_path

    keep = names if callable(names) else (lambda p: p.name in set(names))
    out = out.expanduser()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for f in sorted(src.iterdir()):
            if f.is_file() and not f.name.startswith(".") and keep(f):
                shutil.copy2(f, tmp / f.name)
        clear_out(out)
    return out


def flag_origins(flags: dict[str, tuple[str, Any]]) -> dict[str, str]:
    """Config key -> how the user typed it: ``{"sampling.runs": ("--samples", -1)}`` gives
    ``{"sampling.runs": "--samples -1"}``, so a validation error names the flag."""
    return {key: f"{flag} {value}" for key, (flag, value) in flags.items()}


def config_from_flags(
    model: type,
    flags: dict[str, tuple[str, Any]],
    overrides: Sequence[str] | None,
    source: str,
    base: dict[str, Any] | None = None,
) -> Any:
    """A step config from a verb's flags (dotted key -> (flag, value)), then ``--set``, through
    the one validation path: an error names the flag or the ``--set`` the user typed."""
    from runner.config import apply_overrides
    from tasks.config import validate

    data: dict[str, Any] = dict(base or {})
    for key, (_, value) in flags.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    origins = flag_origins(flags)
    data = apply_overrides(data, overrides or [], origins)
    return validate(model, data, source, origins)


def model_arg(model: str, allow_pickle: bool = False) -> str:
    """``--model`` as the step will get it, checked now (exit 2 before any work): a missing or
    unusable folder, a corrupt checkpoint, an unknown zoo name. A fingerprint folder stands for
    its ``published/`` model; with ``--allow-pickle`` a pickle-only folder is converted once
    and its safetensors copy is used."""
    from tasks.fingerprint.artifacts import published_dir
    from tasks.models.zoo import check_ref, resolve_model

    path = Path(model).expanduser()
    checked = published_dir(path) if published_dir(path).is_dir() else path
    check_ref(str(checked) if path.exists() else model, allow_pickle=allow_pickle)
    if allow_pickle and checked.is_dir():
        converted = resolve_model(checked, allow_pickle=True)
        return str(converted) if converted != checked else model
    return model
