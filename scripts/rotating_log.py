"""Append stdin to a log file, rotating it by size without losing a line (start_services.sh).

    some-process 2>&1 | rotating_log.py var/log/web.log

This is the only writer of the file, so it can rename it between two lines: web.log becomes
web.log.1 (web.log.1 becomes web.log.2, ...) and the next line starts a new web.log. Nothing is
copied or truncated, so nothing written meanwhile is lost. LOG_MAX_BYTES (default 10 MB) is the
size that triggers a rotation; LOG_BACKUPS (default 5) old files are kept. It ends when every
process writing to the pipe has exited.
"""

import os
import sys
from pathlib import Path


def rotate(path: Path, backups: int) -> None:
    for number in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{number + 1}"))
    if backups:
        path.replace(path.with_name(f"{path.name}.1"))
    else:
        path.unlink()


def main() -> None:
    path = Path(sys.argv[1])
    max_bytes = int(os.environ.get("LOG_MAX_BYTES") or 10 * 1024 * 1024)
    backups = int(os.environ.get("LOG_BACKUPS") or 5)
    log = path.open("ab")
    for line in iter(sys.stdin.buffer.readline, b""):
        log.write(line)
        log.flush()
        if log.tell() >= max_bytes:
            log.close()
            rotate(path, backups)
            log = path.open("ab")
    log.close()


if __name__ == "__main__":
    main()
