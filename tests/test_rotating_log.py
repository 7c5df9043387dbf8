"""scripts/rotating_log.py: var/log files rotate by size, and no line is lost or split."""

import subprocess
import sys

from scripts.processes import ROOT, service_env


def rotate_through(tmp_path, lines: list[str], **env: str) -> list[str]:
    """Pipe lines through rotating_log.py; return the files' lines, oldest file first."""
    log = tmp_path / "web.log"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rotating_log.py"), str(log)],
        input="".join(f"{line}\n" for line in lines).encode(),
        env=service_env(**env),
        check=True,
        timeout=60,
    )
    backups = sorted(tmp_path.glob("web.log.*"), key=lambda p: -int(p.suffix[1:]))
    return [line for path in [*backups, log] for line in path.read_text().splitlines()]


def test_every_line_survives_rotation_in_order(tmp_path):
    lines = [f"line {n} " + "x" * (n % 70) for n in range(3000)]
    written = rotate_through(tmp_path, lines, LOG_MAX_BYTES="4096", LOG_BACKUPS="1000")
    assert written == lines
    files = list(tmp_path.glob("web.log*"))
    assert len(files) > 20
    # Each file stops at the first line that takes it past the limit.
    assert all(path.stat().st_size < 4096 + 100 for path in files)


def test_only_the_newest_backups_are_kept(tmp_path):
    lines = [f"line {n:05d}" for n in range(5000)]
    written = rotate_through(tmp_path, lines, LOG_MAX_BYTES="1000", LOG_BACKUPS="3")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "web.log",
        "web.log.1",
        "web.log.2",
        "web.log.3",
    ]
    assert written == lines[-len(written) :]
