"""The JSON log line of the API and the worker (the standard library only: the API imports it without torch)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (through `clean`) and the record's `fields`; `request_id`,
    when given, fills in the request id of a record without one."""

    def __init__(
        self,
        fields: tuple[str, ...],
        clean: Callable[[str], str] = str,
        request_id: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.fields, self.clean, self.request_id = fields, clean, request_id

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.clean(record.getMessage()),
        }
        for name in self.fields:
            if name in record.__dict__:
                obj[name] = record.__dict__[name]
        if "request_id" not in obj and self.request_id is not None and self.request_id():
            obj["request_id"] = self.request_id()
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)
