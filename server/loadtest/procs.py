"""CPU and memory of the stack's processes, read from /proc once a second.

The processes are found by what they listen on (/proc/net/* gives the socket's inode, /proc/<pid>/fd the
process holding it): Asterisk by its SIP port, the Hilo server by its HTTP port, PostgreSQL's postmaster
and Redis by theirs. A group is that process and all its descendants (every PostgreSQL backend, whichever
database it serves), looked up again at every sample, so a backend that starts during the run counts from
its start. CPU is utime + stime; a process that exits between two samples loses its last second (small
against a run). Memory is the resident set (statm)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"


def _hex_address(text: str) -> tuple[str, int]:
    """/proc/net's "0100007F:13C4" as ("127.0.0.1", 5060); IPv6 as its hex (only compared, never shown)."""
    address, port = text.split(":")
    if len(address) == 8:
        host = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    else:
        host = address
    return host, int(port, 16)


def listening_inodes(table: str, port: int, state: str) -> set[int]:
    """Inodes of sockets in /proc/net/<table> bound to `port` in `state` (any address)."""
    inodes: set[int] = set()
    try:
        lines = (PROC / "net" / table).read_text().splitlines()[1:]
    except OSError:
        return inodes
    for line in lines:
        fields = line.split()
        if len(fields) < 10:
            continue
        _, local_port = _hex_address(fields[1])
        if local_port == port and fields[3] == state:
            inodes.add(int(fields[9]))
    return inodes


def pids_holding(inodes: set[int]) -> set[int]:
    wanted = {f"socket:[{i}]" for i in inodes}
    found: set[int] = set()
    if not wanted:
        return found
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                try:
                    if os.readlink(fd) in wanted:
                        found.add(int(entry.name))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return found


def pids_listening(port: int, udp: bool = False) -> set[int]:
    if udp:
        inodes = listening_inodes("udp", port, UDP_UNCONNECTED) | listening_inodes("udp6", port, UDP_UNCONNECTED)
    else:
        inodes = listening_inodes("tcp", port, TCP_LISTEN) | listening_inodes("tcp6", port, TCP_LISTEN)
    return pids_holding(inodes)


def parse_stat(text: str) -> tuple[int, int]:
    """(parent pid, utime + stime in clock ticks) from /proc/<pid>/stat (the name may hold spaces and ')')."""
    rest = text[text.rindex(")") + 2 :].split()
    # after the name: state(0) ppid(1) ... utime(11) stime(12)
    return int(rest[1]), int(rest[11]) + int(rest[12])


def read_process(pid: int) -> tuple[int, int, int] | None:
    """(ppid, cpu ticks, resident bytes) of a live process, or None if it is gone."""
    try:
        ppid, ticks = parse_stat((PROC / str(pid) / "stat").read_text())
        resident = int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None
    return ppid, ticks, resident


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid, _ = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def with_descendants(roots: Iterable[int], children: dict[int, list[int]]) -> set[int]:
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


@dataclass
class Group:
    name: str
    roots: set[int]
    descendants: bool = True  # the roots' children too (PostgreSQL's backends)
    times: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)  # of one core, over the second before each sample
    cpu_delta: list[float] = field(default_factory=list)  # CPU seconds in the interval ending at each sample
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # CPU seconds between the first sample and the last
    pids_seen: set[int] = field(default_factory=set)
    _ticks: dict[int, int] = field(default_factory=dict)


class Sampler:
    """Samples each group's processes; `sample()` once a second (the runner's clock)."""

    def __init__(self, roots: dict[str, set[int]]) -> None:
        self.groups = {name: Group(name, pids) for name, pids in roots.items() if pids}
        self.missing = sorted(name for name, pids in roots.items() if not pids)
        self._last: float | None = None

    def add(self, name: str, pids: set[int], descendants: bool = True) -> None:
        """A group found after the start (the load test's own SIPp, the load test itself)."""
        if pids and name not in self.groups:
            group = self.groups[name] = Group(name, pids, descendants)
            # its CPU so far is not the run's: the next sample counts from here
            for pid in group_pids(group, children_map()):
                if (info := read_process(pid)) is not None:
                    group._ticks[pid] = info[1]

    def sample(self, now: float) -> None:
        children = children_map()
        elapsed = None if self._last is None else now - self._last
        for group in self.groups.values():
            pids = group_pids(group, children)
            ticks: dict[int, int] = {}
            resident = 0
            for pid in pids:
                info = read_process(pid)
                if info is None:
                    continue
                ticks[pid] = info[1]
                resident += info[2]
            if elapsed is not None:
                # a process new since the last sample started after it: all its ticks are in this interval
                delta = sum(t - group._ticks.get(pid, 0) for pid, t in ticks.items()) / TICK
                group.cpu_s += delta
                group.cpu_delta.append(delta)
                group.times.append(now)
                group.cpu_pct.append(round(100 * delta / elapsed, 1) if elapsed > 0 else 0.0)
                group.rss_mb.append(round(resident / 2**20, 1))
            group._ticks = ticks
            group.pids_seen |= set(ticks)
        self._last = now

    def cpu_between(self, name: str, start: float, end: float) -> float:
        """CPU seconds of a group over the sample intervals that end after `start` and by `end` (+0.5 s)."""
        group = self.groups.get(name)
        if group is None:
            return 0.0
        return sum(d for t, d in zip(group.times, group.cpu_delta, strict=True) if start < t <= end + 0.5)


def group_pids(group: Group, children: dict[int, list[int]]) -> set[int]:
    return with_descendants(group.roots, children) if group.descendants else set(group.roots)


def find_stack(
    *, sip_port: int, http_port: int | None, pg_port: int | None, redis_port: int | None
) -> dict[str, set[int]]:
    """The stack's processes by the ports they listen on (an empty set: not found on this machine)."""
    roots: dict[str, set[int]] = {"asterisk": pids_listening(sip_port, udp=True)}
    if http_port is not None:
        roots["hilo"] = pids_listening(http_port)
    if pg_port is not None:
        roots["postgres"] = pids_listening(pg_port)
    if redis_port is not None:
        roots["redis"] = pids_listening(redis_port)
    # The postmaster's children listen on nothing: keep the root only (its descendants are added per sample)
    return roots
