"""What every ``actionreel`` command shares: one-line errors, exit codes, ``--json``, store options.

Kept free of heavy imports (no torch, ray, av, cv2, pyarrow): ``--help`` and argument errors must be
instant, so the command modules import the pipeline inside their command functions.

Exit codes: 0 done, 1 failed (unexpected error), 2 usage or input error, 3 done with quarantined
episodes under ``--strict`` (docs/cli.md).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.exceptions import TyperException  # the base of typer's usage errors (BadParameter, NoSuchOption, ...)

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_QUARANTINED = 3
CONTEXT = {"help_option_names": ["-h", "--help"]}
STORE_ENV = "ACTIONREEL_STORE"
DEBUG_ENV = "ACTIONREEL_DEBUG"

# Errors the pipeline raises for bad input: their message already names the file, episode or field.
# Matched by class name so that no pipeline module has to be imported to recognize them.
INPUT_ERRORS = frozenset({"UserError", "DatasetError", "SourceError", "VersionError", "RefConflict", "ExportError",
                          "QueryError", "FileNotFoundError", "FileExistsError", "NotADirectoryError",
                          "IsADirectoryError", "PermissionError"})


class UserError(Exception):
    """A mistake of the person running the command: one line naming the thing and the fix (exit 2)."""


@dataclass
class Outcome:
    """What a command returns: its JSON outcome and its exit code (3 = done with quarantined episodes)."""

    data: dict = field(default_factory=dict)
    code: int = EXIT_DONE


@dataclass
class CliState:
    debug: bool = False
    json: bool = False
    command_line: bool = False  # running as the `actionreel` command (jobs.cli.main), not as a library


STATE = CliState()


def debug_enabled() -> bool:
    return STATE.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def json_mode() -> bool:
    """Whether the running command prints only its JSON outcome (no tables, no progress)."""
    return STATE.json


def is_input_error(exc: BaseException) -> bool:
    return any(cls.__name__ in INPUT_ERRORS for cls in type(exc).__mro__)


def error_line(exc: BaseException) -> str:
    """The one line a user sees for ``exc``: the message, flattened, prefixed ``error:``."""
    if isinstance(exc, TyperException) and hasattr(exc, "format_message"):
        text = exc.format_message()
    elif isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"{exc.filename} does not exist"
    else:
        text = str(exc) or type(exc).__name__
    return "error: " + " ".join(text.split())


def fail(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr (the traceback too under --debug); return its exit code."""
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    if is_input_error(exc) or isinstance(exc, TyperException):
        typer.echo(error_line(exc), err=True)
        return EXIT_USAGE
    typer.echo(f"error: {type(exc).__name__}: {' '.join(str(exc).split())} "
               f"(unexpected; run again with --debug or {DEBUG_ENV}=1 for the traceback)", err=True)
    return EXIT_FAILED


@contextlib.contextmanager
def _stdout_for(as_json: bool) -> Iterator[None]:
    """Under --json everything a command prints goes to stderr: stdout holds the outcome alone."""
    if not as_json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def command(fn: Callable[..., Outcome | dict | None]) -> Callable[..., None]:
    """Wrap a command: adds ``--json``, turns input errors into one line and exit 2, others into exit 1.

    ``fn`` returns its outcome (a dict or an ``Outcome``); with --json it is printed as one JSON object, and
    a failure as ``{"error": ..., "exit_code": ...}``.
    """
    signature = inspect.signature(fn)
    json_param = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                   default=typer.Option(False, "--json", help="Print the outcome as one JSON object "
                                                        "on stdout (and nothing else there)"))

    @functools.wraps(fn)
    def wrapper(*args: Any, as_json: bool = False, **kwargs: Any) -> None:
        STATE.json = as_json
        try:
            with _stdout_for(as_json):
                outcome = fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted; run the command again to resume (finished work is kept)", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            code = fail(exc)
            if as_json:  # a script reads why from stdout too
                typer.echo(json.dumps({"error": error_line(exc).removeprefix("error: "), "exit_code": code}))
            raise typer.Exit(code) from None
        finally:
            STATE.json = False
        if not isinstance(outcome, Outcome):
            outcome = Outcome(outcome or {})
        if as_json:
            typer.echo(json.dumps(outcome.data, sort_keys=True, default=str))
        if outcome.code:
            raise typer.Exit(outcome.code)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), json_param])
    return wrapper


def echo(text: str = "", err: bool = False) -> None:
    """Human output: printed unless the command runs with --json."""
    if not json_mode():
        typer.echo(text, err=err)


# ---------------------------------------------------------------- shared options and checks


def store_option(required: bool = True) -> Any:
    return typer.Option(... if required else None, "--store", envvar=STORE_ENV,
                        help=f"Episode store root (path or fsspec URL; default: ${STORE_ENV})")


def storage_options_option() -> Any:
    return typer.Option(None, "--storage-options", help="fsspec storage options as a JSON object or @FILE "
                        "(e.g. '{\"endpoint_url\": \"http://minio:9000\"}')")


def parse_storage_options(text: str | None) -> dict:
    """``--storage-options``: a JSON object, or ``@path`` to a file holding one."""
    if not text:
        return {}
    source = "--storage-options"
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UserError(f"--storage-options: {path} does not exist; pass @FILE of an existing JSON file")
        source, text = f"--storage-options {path}", path.read_text()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{source}: not valid JSON ({exc}); pass a JSON object like '{{\"anon\": true}}'") from None
    if not isinstance(value, dict):
        raise UserError(f"{source}: must be a JSON object of fsspec options, got {type(value).__name__}")
    return value


def require_path(path: str | None, what: str, storage_options: dict | None = None) -> None:
    """A local path or fsspec URL that must exist: otherwise one line saying it does not."""
    if not path:
        return
    if "://" not in path:
        if not Path(path).exists():
            raise UserError(f"{what} {path} does not exist")
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    if not fs.exists(root):
        raise UserError(f"{what} {path} does not exist")


def require_store(uri: str, storage_options: dict | None = None) -> None:
    """A store that must exist already (every command but ingest, which creates one)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if not fs.exists(root):
        raise UserError(f"store {uri} does not exist; create it with `actionreel ingest SOURCE --store {uri}`")
    if not any(fs.exists(f"{root.rstrip('/')}/{part}") for part in ("refs", "versions")):
        raise UserError(f"{uri} is not an ActionReel store (no refs/ or versions/ in it); "
                        f"create one with `actionreel ingest SOURCE --store {uri}`")


def choice(value: str | None, allowed: tuple[str, ...] | list[str], option: str) -> str | None:
    """An enum option: the value, or one line naming the option and the values it accepts."""
    if value is None or value in allowed:
        return value
    raise UserError(f"{option} {value!r} is not one of: {', '.join(allowed)}")


def split_list(text: str | None) -> tuple[str, ...] | None:
    """``"a,b"`` -> ``("a", "b")``; empty items dropped; None stays None."""
    if text is None:
        return None
    return tuple(item.strip() for item in text.split(",") if item.strip())


def exit_process(code: int | str | None) -> NoReturn:
    """End a command-line process with ``code``: Ray shut down, Python's exit handlers run, output
    flushed, then ``os._exit``.

    Why not a plain ``sys.exit``: it goes on to run C++ static destructors, and there Ray's core worker
    can deadlock joining its io thread (seen: a job driver under ``ray job submit`` printed its result,
    then hung in ``exit`` until killed). Everything Python-level has run by then; only those
    destructors are skipped. For processes only: in-process callers use ``main(argv)``."""
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else EXIT_FAILED
    ray = sys.modules.get("ray")  # never imported just to shut it down
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):
            ray.shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run_process(command: Callable[..., Any]) -> NoReturn:
    """``typer.run(command)`` as a process's whole life (``python -m jobs.shard``), ended by ``exit_process``."""
    try:
        typer.run(command)
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    exit_process(code)
