"""Run folders: each stage run in one process logs to its own folder only."""

from __future__ import annotations

import logging

import pytest

from hpacam.runs import prepare_run_dir


pytestmark = pytest.mark.usefixtures("restore_root_logging")


def test_consecutive_runs_in_one_process_keep_their_logs_apart(tmp_path):
    log = logging.getLogger("hpacam.test")
    first = prepare_run_dir(tmp_path / "cam", {"stage": "cam"})
    log.info("line of the first run")
    second = prepare_run_dir(tmp_path / "regressor", {"stage": "regressor"})
    log.info("line of the second run")
    prepare_run_dir(tmp_path / "regressor", {"stage": "regressor"})  # the same folder again: no second handler
    log.info("resumed line")

    first_log = (first / "log.txt").read_text()
    second_log = (second / "log.txt").read_text()
    assert "line of the first run" in first_log and "second run" not in first_log
    assert "resumed line" not in first_log
    assert "first run" not in second_log
    assert second_log.count("line of the second run") == 1 and second_log.count("resumed line") == 1
    assert (second / "config.yaml").read_text().strip() == "stage: regressor"
