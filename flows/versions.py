"""Applied flow configurations in PostgreSQL: apply, history, rollback.

Applying stores the bundle as the next version and, in the same transaction, sends a NOTIFY on
`FLOWS_CHANNEL`; every Hilo server LISTENs and swaps to the new version for its next calls. Because the
notification is sent only on commit, no server can see a version that is not durably stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from flows.bundle import FlowBundle

FLOWS_CHANNEL = "hilo_flows"
_APPLY_LOCK = 0x464C4F57  # serialises version numbering between Hilo nodes and CLI runs


@dataclass(frozen=True)
class FlowVersion:
    version: int
    digest: str
    applied_by: str
    applied_at: datetime
    comment: str
    rollback_of: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "applied_by": self.applied_by,
            "applied_at": self.applied_at.isoformat(),
            "comment": self.comment,
            "rollback_of": self.rollback_of,
        }


class UnknownVersion(LookupError):
    pass


def _version(row: asyncpg.Record) -> FlowVersion:
    return FlowVersion(
        row["version"], row["digest"], row["applied_by"], row["applied_at"], row["comment"], row["rollback_of"]
    )


class FlowVersions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def apply(
        self, bundle: FlowBundle, *, applied_by: str, comment: str = "", rollback_of: int | None = None
    ) -> tuple[FlowVersion, bool]:
        """Store `bundle` as the new live version (the caller has validated it). Returns the live version and
        whether it is new: applying what is already live changes nothing and records nothing."""
        digest = bundle.digest()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPLY_LOCK)
            live = await conn.fetchrow(
                "SELECT version, digest, applied_by, applied_at, comment, rollback_of"
                " FROM flow_versions ORDER BY version DESC LIMIT 1"
            )
            if live is not None and live["digest"] == digest and rollback_of is None:
                return _version(live), False
            row = await conn.fetchrow(
                "INSERT INTO flow_versions (version, files, digest, applied_by, comment, rollback_of)"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " RETURNING version, digest, applied_by, applied_at, comment, rollback_of",
                (live["version"] if live else 0) + 1,
                dict(bundle.files),
                digest,
                applied_by,
                comment,
                rollback_of,
            )
            assert row is not None
            await conn.execute("SELECT pg_notify($1, $2)", FLOWS_CHANNEL, str(row["version"]))
        return _version(row), True

    async def live(self) -> tuple[FlowVersion, FlowBundle] | None:
        row = await self.pool.fetchrow(
            "SELECT version, digest, applied_by, applied_at, comment, rollback_of, files"
            " FROM flow_versions ORDER BY version DESC LIMIT 1"
        )
        return (_version(row), FlowBundle(row["files"])) if row else None

    async def get(self, version: int) -> tuple[FlowVersion, FlowBundle]:
        row = await self.pool.fetchrow(
            "SELECT version, digest, applied_by, applied_at, comment, rollback_of, files"
            " FROM flow_versions WHERE version = $1",
            version,
        )
        if row is None:
            raise UnknownVersion(f"there is no flow version {version}")
        return _version(row), FlowBundle(row["files"])

    async def history(self, limit: int = 50) -> list[FlowVersion]:
        rows = await self.pool.fetch(
            "SELECT version, digest, applied_by, applied_at, comment, rollback_of"
            " FROM flow_versions ORDER BY version DESC LIMIT $1",
            limit,
        )
        return [_version(r) for r in rows]

    async def rollback(self, version: int, *, applied_by: str, comment: str = "") -> FlowVersion:
        """Make an earlier version live again, as a new version that records where it came from."""
        _, bundle = await self.get(version)
        applied, _ = await self.apply(
            bundle, applied_by=applied_by, comment=comment or f"rollback to version {version}", rollback_of=version
        )
        return applied
