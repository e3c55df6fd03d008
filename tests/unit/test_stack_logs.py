"""The local stack's logs are for root: `private_logs` (stack/lib.sh, run by stack/up.sh before and after
the services start) closes the folder and every file in it, whatever umask they were created with. Run here
on a folder of the test's own (the function only changes modes under $LOGS)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_private_logs_closes_the_folder_and_its_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o755)
    for name in ("hilo.log", "redis.log", "sipp-agent-alice-errors.log"):
        (logs / name).write_text("caller +********222\n")
        (logs / name).chmod(0o644)  # as a `>>` under stack/up.sh's umask 022 makes them
    (logs / "own.log").write_text("")
    (logs / "own.log").chmod(0o600)
    elsewhere = tmp_path / "messages"  # a log kept elsewhere, linked in (Asterisk's, PostgreSQL's)
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    (logs / "asterisk-messages.log").symlink_to(elsewhere)

    script = '. "$1" && LOGS="$2" && private_logs'
    subprocess.run(["bash", "-c", script, "_", str(ROOT / "stack" / "lib.sh"), str(logs)], check=True, timeout=30)

    assert _mode(logs) == 0o750
    assert {p.name: _mode(p) for p in logs.iterdir() if not p.is_symlink()} == {
        "hilo.log": 0o640,
        "redis.log": 0o640,
        "sipp-agent-alice-errors.log": 0o640,
        "own.log": 0o600,
    }
    assert _mode(elsewhere) == 0o644  # not followed: its own folder protects it
