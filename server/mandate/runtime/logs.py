"""Log lines for people (text, the default) or for machines (`--log-format json`).

JSON: one object per line, with `time` (RFC 3339, UTC), `level`, `logger`, `message`, `pid`,
the structured fields of the line (a request line has method, caller, actor, code, reason,
duration_ms, revision, incident; lifecycle lines have event = start, ready, reload, drain,
stop) and `exception` when there is one. Every line on stdout and stderr is then JSON: what
gRPC's C core, a library or Python itself prints there is read back through a pipe and
wrapped into an object (logger "stdout" or "stderr").

Nothing secret is ever put on a log line: tokens, keys and invitation secrets are not logged,
and request bodies are not either (only the acting user's id).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TEXT_FORMAT_PROCESS = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": rfc3339(record.created), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), "pid": record.process}
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup(level: str = "INFO", log_format: str = "text", *, process: bool = False, capture: bool = True) -> None:
    """Configure the root logger. With JSON and `capture`, stdout and stderr are relayed as JSON
    too (a process whose parent already relays them passes capture=False)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_format == "json":
        stream = _captured_stream() if capture else sys.stderr
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT_PROCESS if process else TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def event(logger: logging.Logger, name: str, message: str, *args, level: int = logging.INFO, **fields) -> None:
    """A lifecycle line: start, ready, reload, drain, stop."""
    logger.log(level, message, *args, extra={"fields": {"event": name, **fields}})


_relays: list[tuple[int, int, threading.Thread]] = []


def _captured_stream():
    """Point fds 1 and 2 at pipes whose lines come back as JSON on the real stderr/stdout;
    returns a stream on the real stderr for the log handler."""
    if _relays:
        return os.fdopen(os.dup(_relays[-1][1]), "w", buffering=1, encoding="utf-8", errors="replace")
    for fd, name in ((1, "stdout"), (2, "stderr")):
        (sys.stdout if fd == 1 else sys.stderr).flush()
        real = os.dup(fd)
        read, write = os.pipe()
        os.dup2(write, fd)
        os.close(write)
        thread = threading.Thread(target=_relay, args=(read, real, name), name=f"log-{name}", daemon=True)
        thread.start()
        _relays.append((fd, real, thread))
    atexit.register(_restore)
    return os.fdopen(os.dup(_relays[-1][1]), "w", buffering=1, encoding="utf-8", errors="replace")


def _relay(read: int, real: int, name: str) -> None:
    with os.fdopen(read, "rb") as lines, os.fdopen(real, "wb", buffering=0, closefd=False) as out:
        for raw in lines:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if not text.strip():
                continue
            if text.startswith("{") and text.endswith("}"):
                try:
                    json.loads(text)
                    out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    continue
                except ValueError:
                    pass
            line = {"time": rfc3339(time.time()), "level": "WARNING" if name == "stderr" else "INFO",
                    "logger": name, "message": text, "pid": os.getpid()}
            out.write((json.dumps(line, ensure_ascii=False) + "\n").encode())


def _restore() -> None:
    """At exit: give fds 1 and 2 back, so the relays read to the end and stop."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, real, _ in _relays:
        os.dup2(real, fd)
    for _, _, thread in _relays:
        thread.join(timeout=2)
