"""Connect to Ray: the cluster named by --ray-address / RAY_ADDRESS (as under `ray job submit`), or
a local Ray started on the spot. A Ray already initialized in this process is reused.

Ray's own messages (the token banner, Ray Data's execution plan and progress notices, actor restarts,
worker output) stay out of the terminal: they go to a log file (``ray_log_path()``, named by the CLI's
last line) and to Ray's session logs. Jobs draw their own progress (pipeline.progress). Ray's C++
core worker prints its ERROR lines to file descriptor 2 whatever the logging settings (e.g. Ray Data's
"constructor arguments in the object store" notice for every actor pool), so under the command line
descriptor 2 itself is pointed at the log file and Python's stderr at a copy of the terminal.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
from pathlib import Path

import ray
import ray.data  # configures Ray Data's loggers now, so that quieting them in init_ray sticks

_LOG_DIR_ENV = "ACTIONREEL_LOG_DIR"
_RAY_LOGGERS = ("ray", "ray.data")  # ray.data does not propagate to "ray"
_state: dict[str, str] = {}
_native: dict = {}  # the terminal's descriptor 2 while Ray's native output goes to the log (command line)
_calls = [0]  # init_ray calls in this process: the CLI names the log only for a run that used Ray


def ray_log_path() -> str:
    """Where this process writes Ray's messages (created on first use)."""
    if "path" not in _state:
        folder = Path(os.environ.get(_LOG_DIR_ENV) or Path(tempfile.gettempdir()) / "actionreel-logs")
        folder.mkdir(parents=True, exist_ok=True)
        _state["path"] = str((folder / f"ray-{os.getpid()}.log").resolve())
    return _state["path"]


def ray_started() -> bool:
    """Whether this process has a Ray (so the CLI names the log file)."""
    return "path" in _state and ray.is_initialized()


def init_calls() -> int:
    """How many times jobs asked for Ray in this process (started or reused)."""
    return _calls[0]


def _quiet_ray_loggers() -> None:
    """Ray's loggers: console handlers raised to ERROR, everything kept in the log file."""
    path = ray_log_path()
    for name in _RAY_LOGGERS:
        logger = logging.getLogger(name)
        for existing in logger.handlers:
            if not isinstance(existing, logging.FileHandler):
                existing.setLevel(logging.ERROR)
        if not any(getattr(h, "baseFilename", None) == path for h in logger.handlers):
            handler = logging.FileHandler(path)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
            handler.setLevel(logging.INFO)
            logger.addHandler(handler)


def _native_stderr_to_log() -> None:
    """Under the command line: file descriptor 2 (Ray's C++ logging, and the processes ray.init starts)
    goes to the log file; Python's own stderr (our one-line errors, progress, the report) stays on the
    terminal through a duplicate of the old descriptor. A library caller's stderr is left alone."""
    from jobs.cliutil import STATE

    if not STATE.command_line or "terminal_fd" in _native:
        return
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        python_on_fd2 = False  # a captured stream (tests): only the descriptor moves
    sys.stderr.flush()
    _native["terminal_fd"] = os.dup(2)
    log = os.open(ray_log_path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    if python_on_fd2:
        _native["python_stderr"] = sys.stderr
        sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(_native["terminal_fd"]), "w"),
                                      encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace",
                                      line_buffering=True)


def restore_native_stderr() -> None:
    """Descriptor 2 and Python's stderr back as they were (the command is done; Ray may live on in-process)."""
    terminal = _native.pop("terminal_fd", None)
    if terminal is None:
        return
    sys.stderr.flush()
    os.dup2(terminal, 2)
    os.close(terminal)
    if "python_stderr" in _native:
        sys.stderr = _native.pop("python_stderr")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    _calls[0] += 1
    if ray.is_initialized():
        return
    _native_stderr_to_log()
    _quiet_ray_loggers()
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {"PYTHONPATH": _project_root()}} if not address else None
    # Worker output stays in the session logs; the driver's progress shows what the workers do.
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        ray.init(address=address, **quiet)
    else:
        # "local": a new Ray of this process's own, never the last cluster someone else started on the machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, **quiet)
    _quiet_ray_loggers()  # ray.init re-configures the "ray" logger
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the jobs draw one bar from the driver (pipeline.progress)
    ctx.print_on_execution_start = False


def _project_root() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    existing = os.environ.get("PYTHONPATH", "")
    return f"{root}:{existing}" if existing else root
