"""What an admin does to the live flows — validate, apply, roll back — in one place for the CLI and the
admin API. Every change is checked as a whole bundle first; nothing with a problem is stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from flows.bundle import CheckedBundle, FlowBundle, check_bundle
from flows.loader import FlowProblem
from flows.validate import Checks
from flows.versions import FlowVersion, FlowVersions

# Called with the bundle that just went live, e.g. to regenerate Asterisk's dialplan for its numbers.
AfterApply = Callable[[CheckedBundle], Awaitable[None]]


@dataclass
class ApplyResult:
    version: FlowVersion | None = None  # None when there were problems
    new: bool = False  # False: the same configuration was already live, nothing was recorded
    problems: list[FlowProblem] = field(default_factory=list)


async def _nothing_after(checked: CheckedBundle) -> None:
    return None


async def apply_bundle(
    versions: FlowVersions,
    bundle: FlowBundle,
    checks: Checks,
    *,
    applied_by: str,
    comment: str = "",
    where: str = "dialplans",
    after_apply: AfterApply = _nothing_after,
) -> ApplyResult:
    checked, problems = check_bundle(bundle, checks, where=where)
    if checked is None:
        return ApplyResult(problems=problems)
    version, new = await versions.apply(bundle, applied_by=applied_by, comment=comment)
    if new:
        await after_apply(checked)
    return ApplyResult(version, new)


async def rollback_to(
    versions: FlowVersions,
    version: int,
    checks: Checks,
    *,
    applied_by: str,
    comment: str = "",
    after_apply: AfterApply = _nothing_after,
) -> ApplyResult:
    """Make `version` live again. It is checked against today's queues and files first: a version that
    sends callers to a queue deleted since cannot come back unnoticed."""
    _, bundle = await versions.get(version)
    checked, problems = check_bundle(bundle, checks, where=f"version {version}")
    if checked is None:
        return ApplyResult(problems=problems)
    applied = await versions.rollback(version, applied_by=applied_by, comment=comment)
    await after_apply(checked)
    return ApplyResult(applied, True)
