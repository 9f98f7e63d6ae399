"""Connect to Ray: the cluster named by --ray-address / RAY_ADDRESS (as under `ray job submit`), or
a local Ray started on the spot. A Ray already initialized in this process is reused.

Ray's own messages (the token banner, Ray Data's execution plan and progress notices, actor restarts,
worker output) stay out of the terminal: they go to a log file (``ray_log_path()``, named by the CLI's
last line) and to Ray's session logs. Jobs draw their own progress (pipeline.progress).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import ray
import ray.data  # configures Ray Data's loggers now, so that quieting them in init_ray sticks

_LOG_DIR_ENV = "ACTIONREEL_LOG_DIR"
_RAY_LOGGERS = ("ray", "ray.data")  # ray.data does not propagate to "ray"
_state: dict[str, str] = {}
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


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    _calls[0] += 1
    if ray.is_initialized():
        return
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
