"""What the agent console offers: dispositions, away reasons, note length (dialplans/console.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hilo.yamlconf import load_model

ChoiceId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=80)]


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dispositions: dict[ChoiceId, Label] = Field(min_length=1)
    away_reasons: dict[ChoiceId, Label] = Field(min_length=1)
    note_max_length: int = Field(default=2000, ge=1, le=20000)


def load_console_config(folder: Path) -> ConsoleConfig:
    """ConfigError names file, line and field of every problem."""
    return load_model(folder / "console.yaml", ConsoleConfig)
