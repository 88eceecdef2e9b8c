"""A logging filter that keeps Prefect's run records off the terminal of `skybatch run` (see cli_logging.yml)."""

from __future__ import annotations

import logging




class HidePrefectRunLogs(logging.Filter):
    """Drop records of Prefect's loggers below ERROR, and its flow/task-run records at any level.

    The CLI prints each report and each error once itself; the records still reach the Prefect API
    through its own handler. Warnings and errors of other libraries still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith(("prefect.flow_runs", "prefect.task_runs", "prefect.engine")):
            return False
        if name == "prefect" or name.startswith("prefect."):
            return record.levelno >= logging.ERROR
        return True
