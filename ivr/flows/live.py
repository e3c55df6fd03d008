"""The flows that answer calls: loaded and fully validated when Hilo starts, so a broken flow file stops
the start with its problems listed (file:line:column) instead of failing a caller later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dialplans.models import load_numbers
from hilo.yamlconf import ConfigError
from ivr.flows.loader import FlowProblem
from ivr.flows.schema import Flow, templates_of
from ivr.flows.validate import Checks, known_queues, load_and_validate
from ivr.tts import voice_for


@dataclass(frozen=True)
class LiveFlows:
    flows: dict[str, Flow]
    numbers: dict[str, str]  # dialled number -> flow id

    def for_number(self, dialed: str) -> Flow | None:
        flow_id = self.numbers.get(dialed)
        return self.flows.get(flow_id) if flow_id else None

    def static_prompts(self) -> list[tuple[str, str, str]]:
        """(text, voice, language) of every prompt without a template, to render before the first call."""
        prompts: list[tuple[str, str, str]] = []
        for flow in self.flows.values():
            for node in flow.nodes.values():
                for _, text in templates_of(node):
                    if "{" not in text:
                        prompts.append((text, voice_for(flow.language, flow.voice), flow.language))
        return prompts


def load_live_flows(dialplans_dir: Path) -> LiveFlows:
    queues, problems = known_queues(dialplans_dir)
    found, loaded = load_and_validate([dialplans_dir / "flows"], Checks(queues=queues))
    problems += found
    numbers = load_numbers(dialplans_dir).numbers
    flows = {flow_id: item.flow for flow_id, item in loaded.items() if item.flow is not None}
    numbers_file = dialplans_dir / "numbers.yaml"
    lines = numbers_file.read_text().splitlines()
    for number, flow_id in numbers.items():
        if flow_id not in flows:
            line = next((n for n, text in enumerate(lines, 1) if number in text), 1)
            problems.append(
                FlowProblem(str(numbers_file), line, 1, f"number {number!r} goes to unknown flow {flow_id!r}")
            )
    if problems:
        raise ConfigError("\n".join(str(p) for p in problems))
    return LiveFlows(flows, numbers)
