"""Run folders: every result lives in a folder that also holds the resolved config and the log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hpacam.config import save_config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def prepare_run_dir(run_dir: str | Path, cfg: Any, log_name: str = "log.txt") -> Path:
    """Create `run_dir`, save the resolved config as `config.yaml` and log to `log_name` in it.

    Saving the config first means a crashed run can still be reproduced from its folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    setup_logging(run_dir / log_name)
    return run_dir


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to a file (appending, so resumed runs keep their history).

    A new log file replaces the previous run's: stages run one after another in one process (the
    demo, the ablation, notebooks) must not write each other's lines into their run folders.
    """
    root = logging.getLogger()
    root.setLevel(level)
    formatter = logging.Formatter(LOG_FORMAT)
    if not any(getattr(h, "_hpacam_console", False) for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        console._hpacam_console = True  # type: ignore[attr-defined]
        root.addHandler(console)
    if log_file is None:
        return
    log_file = str(Path(log_file).resolve())
    for handler in [h for h in root.handlers if getattr(h, "_hpacam_run_log", False)]:
        if handler.baseFilename != log_file:
            root.removeHandler(handler)
            handler.close()
    if not any(getattr(h, "baseFilename", None) == log_file for h in root.handlers):
        handler = logging.FileHandler(log_file)
        handler.setFormatter(formatter)
        handler._hpacam_run_log = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def log_to_run_file(logger: logging.Logger, message: str) -> None:
    """An ERROR line in the run's log file only, for a failure that the caller reports on stderr itself.

    A script that ends with its own one-line error must still leave the reason in its run
    folder's log, without printing the line twice.
    """
    record = logger.makeRecord(logger.name, logging.ERROR, "(run)", 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_hpacam_run_log", False):
            handler.handle(record)
