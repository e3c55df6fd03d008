"""A test's own line: its flows put live on a number of its own, on a copy of the working copy's bundle (the
admin's `dialplans/` files are never written; the stack fixture restores the working copy after each test)."""

from __future__ import annotations

from flows.admin import apply_bundle
from flows.bundle import FlowBundle
from flows.runtime import checks_for
from tests.stack.conftest import Stack


async def apply_line(
    stack: Stack,
    number: str,
    flows: dict[str, str],
    *,
    hours: str | None = None,
) -> None:
    """Make `flows` (flow id -> YAML text; the first answers `number`) live beside the working copy's.
    `hours`: an hours.yaml in place of the working copy's."""
    assert stack.services.flows is not None
    base = FlowBundle.from_dir(stack.settings.dialplans_dir)
    first = next(iter(flows))
    numbers = base.files["numbers.yaml"].rstrip() + f'\n  "{number}": {first}\n'
    files: dict[str, str | None] = {f"flows/{flow_id}.yaml": text for flow_id, text in flows.items()}
    files["numbers.yaml"] = numbers
    if hours is not None:
        files["hours.yaml"] = hours
    result = await apply_bundle(
        stack.services.flows.versions,
        base.changed(files),
        checks_for(stack.settings.dialplans_dir),
        applied_by="system:tests@system",
    )
    assert not result.problems, result.problems
    assert not isinstance(await stack.services.flows.reload(), list)
