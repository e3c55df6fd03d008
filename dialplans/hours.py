"""Business hours: named calendars (dialplans/hours.yaml) that say whether a line is open at a given moment.

A calendar has an IANA time zone, opening hours per weekday and holidays:

    calendars:
      support:
        timezone: Europe/Madrid
        weekly:
          mon-fri: [08:00-20:00]
          sat: [09:00-14:00, 16:00-19:00]   # several ranges a day
        holidays:
          - {date: 2026-12-25, name: Christmas Day}                   # closed all day
          - {date: 2026-12-24, name: Christmas Eve, hours: [09:00-14:00]}  # special hours instead

Times are wall-clock times in the calendar's zone, so a range means the same local hours on both sides of a
daylight-saving change (a time skipped by the change never happens; one repeated is open or closed twice).
A range is `start-end`, end excluded; `24:00` ends at midnight, and an end before the start runs overnight
(`22:00-02:00`). A range belongs to the day it starts: Friday's `22:00-02:00` keeps Saturday 00:00-02:00
open, and a holiday on Friday (closed or with special hours) replaces Friday's ranges, overnight tail
included. Days not listed are closed.

Loading works from text (applied configurations are kept as texts) and never raises for a bad file: every
problem is a `Problem` (hilo/yamlconf.py) with file, line and column. The calendars are named by flows'
`hours` nodes and by routing.yaml's queues (dialplans/models.py checks those names)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from hilo.yamlconf import InvalidYaml, Loc, NoAliasLoader, Positions, Problem, parse


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        ok = False
    else:
        ok = name != "localtime"  # the host's zone, whatever it is: not a choice an admin can see
    if not ok:
        raise PydanticCustomError(
            "time_zone_unknown",
            "unknown time zone '{name}': use an IANA name such as Europe/Madrid, America/Bogota or UTC",
            {"name": name[:64]},
        )
    return name


# An IANA time zone name (also a flow's `timezone`, flows/schema.py).
TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_time_zone)]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY = 24 * 60


class Span(NamedTuple):
    """Minutes of the day, end excluded. `end <= start` means the range ends the next day."""

    start: int
    end: int

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def covers(self, minute: int) -> bool:
        """Whether `minute` of the range's own day is inside it."""
        return self.start <= minute < (_DAY if self.overnight else self.end)

    def covers_next_day(self, minute: int) -> bool:
        return self.overnight and minute < self.end


def parse_span(text: str) -> Span:
    match = _RANGE.match(text)
    if match is None:
        raise PydanticCustomError(
            "hours_range_format",
            "'{text}' is not a range of hours: write HH:MM-HH:MM, e.g. 09:00-14:00",
            {"text": text},
        )
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    for hour, minute, can_be_24 in ((start_h, start_m, False), (end_h, end_m, True)):
        if minute > 59 or hour > 24 or (hour == 24 and (minute or not can_be_24)):
            raise PydanticCustomError(
                "hours_time_invalid",
                "'{time}' is not a time of day: 00:00 to 23:59, and 24:00 only as the end of a range",
                {"time": f"{hour:02d}:{minute:02d}"},
            )
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise PydanticCustomError(
            "hours_range_empty",
            "'{text}' starts and ends at the same time: for the whole day write 00:00-24:00",
            {"text": text.strip()},
        )
    return Span(start, end)


def _check_range(text: str) -> str:
    parse_span(text)
    return text


def _range_is_text(value: object) -> object:
    if not isinstance(value, str):
        # YAML reads an unquoted 9:00 as the number 540 (base 60); a range is always text.
        raise PydanticCustomError(
            "hours_range_type",
            "{value} is not a range of hours: write HH:MM-HH:MM, e.g. 09:00-14:00 (YAML reads a lone 14:00 "
            "as a number)",
            {"value": repr(value)[:40]},
        )
    return value


def _hours_are_a_list(value: object) -> object:
    if isinstance(value, str):
        raise PydanticCustomError(
            "hours_not_a_list",
            "write the hours of a day as a list, even a single range: [{text}]",
            {"text": value.strip()[:40]},
        )
    return value


def _date_is_text(value: object) -> object:
    if not isinstance(value, str | dt.date):
        raise PydanticCustomError("holiday_date_type", "a holiday date is written YYYY-MM-DD, e.g. 2026-12-25", {})
    return value


RangeText = Annotated[str, BeforeValidator(_range_is_text), AfterValidator(_check_range)]
DayHours = Annotated[list[RangeText], BeforeValidator(_hours_are_a_list), Field(max_length=24)]
CalendarId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=64)]


def weekdays_of(key: str) -> list[int] | None:
    """The weekdays (0 = Monday) a `weekly` key names: `mon`, or a range such as `mon-fri` or `fri-mon`."""
    first, _, last = key.strip().lower().partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        return None
    start = WEEKDAYS.index(first)
    stop = WEEKDAYS.index(last) if last else start
    return [(start + i) % 7 for i in range((stop - start) % 7 + 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Holiday(_Strict):
    date: Annotated[dt.date, BeforeValidator(_date_is_text)]
    name: Annotated[str, StringConstraints(max_length=100)] | None = None
    hours: DayHours | None = None  # None or []: closed all day


class Calendar(_Strict):
    description: str = ""
    timezone: TimeZoneName
    weekly: dict[str, DayHours] = Field(default_factory=dict)
    holidays: list[Holiday] = Field(default_factory=list)

    _zone: ZoneInfo = PrivateAttr()
    _week: tuple[tuple[Span, ...], ...] = PrivateAttr()
    _special: dict[dt.date, Holiday] = PrivateAttr()

    @field_validator("weekly")
    @classmethod
    def known_weekdays_once(cls, weekly: dict[str, list[str]]) -> dict[str, list[str]]:
        named_in: dict[int, str] = {}
        for key in weekly:
            days = weekdays_of(key)
            if days is None:
                raise PydanticCustomError(
                    "weekday_unknown",
                    "unknown weekday '{at_key}': use mon, tue, wed, thu, fri, sat, sun or a range such as mon-fri",
                    {"at_key": key},
                )
            for day in days:
                if day in named_in:
                    raise PydanticCustomError(
                        "weekday_twice",
                        "{day} is given twice: in '{first}' and in '{at_key}'",
                        {"day": WEEKDAYS[day], "first": named_in[day], "at_key": key},
                    )
                named_in[day] = key
        return weekly

    @field_validator("holidays")
    @classmethod
    def one_entry_per_date(cls, holidays: list[Holiday]) -> list[Holiday]:
        first: dict[dt.date, int] = {}
        for i, holiday in enumerate(holidays):
            if holiday.date in first:
                raise PydanticCustomError(
                    "holiday_twice",
                    "holiday {date} is listed twice (first as entry {first} of holidays)",
                    {"date": holiday.date.isoformat(), "first": first[holiday.date] + 1, "at_index": i},
                )
            first[holiday.date] = i
        return holidays

    def model_post_init(self, context: Any, /) -> None:
        self._zone = ZoneInfo(self.timezone)
        week: list[list[Span]] = [[] for _ in WEEKDAYS]
        for key, ranges in self.weekly.items():
            for day in weekdays_of(key) or []:
                week[day] += [parse_span(r) for r in ranges]
        self._week = tuple(tuple(day) for day in week)
        self._special = {h.date: h for h in self.holidays}

    def spans_on(self, day: dt.date) -> tuple[Span, ...]:
        """The ranges that start on `day` (a local date): the holiday's, if it is one, else the weekday's."""
        holiday = self._special.get(day)
        if holiday is not None:
            return tuple(parse_span(r) for r in holiday.hours or [])
        return self._week[day.weekday()]

    def local(self, now: dt.datetime) -> dt.datetime:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("`now` needs a time zone (an aware datetime), e.g. datetime.now(UTC)")
        return now.astimezone(self._zone)

    def is_open(self, now: dt.datetime) -> bool:
        local = self.local(now)
        minute = local.hour * 60 + local.minute
        day = local.date()
        if any(span.covers(minute) for span in self.spans_on(day)):
            return True
        return any(span.covers_next_day(minute) for span in self.spans_on(day - dt.timedelta(days=1)))

    def holiday(self, now: dt.datetime) -> Holiday | None:
        """The holiday on the local date of `now`, if it is one."""
        return self._special.get(self.local(now).date())


class UnknownCalendar(KeyError):
    pass


class Calendars(_Strict):
    """Every calendar of hours.yaml, by id. `Calendars()` has none."""

    calendars: dict[CalendarId, Calendar] = Field(default_factory=dict)

    def ids(self) -> frozenset[str]:
        return frozenset(self.calendars)

    def get(self, calendar_id: str) -> Calendar:
        calendar = self.calendars.get(calendar_id)
        if calendar is None:
            known = ", ".join(sorted(self.calendars)) or "none"
            raise UnknownCalendar(f"calendar {calendar_id!r} is not in hours.yaml (known: {known})")
        return calendar

    def is_open(self, calendar_id: str, now: dt.datetime) -> bool:
        """Whether calendar `calendar_id` is open at `now` (an aware datetime); UnknownCalendar if none."""
        return self.get(calendar_id).is_open(now)


def hours_json_schema() -> dict[str, Any]:
    """The JSON Schema of hours.yaml, for editors and for `hilo flows schema --hours`."""
    schema = Calendars.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Hilo business hours"
    return schema


class _NoDatesLoader(NoAliasLoader):
    """Dates stay text for pydantic to read: a bad one (2026-13-01) is then a problem at its own line,
    where PyYAML's own date reading would fail for the whole file. No aliases either (NoAliasLoader)."""


_NoDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_calendars(text: str, filename: str) -> tuple[Calendars | None, list[Problem]]:
    """Parse and validate the text of an hours.yaml; `filename` names it in problems. Calendars is None when
    there is any problem. An empty text means no calendars."""
    try:
        parsed = parse(text, str(Path(filename)), loader=_NoDatesLoader)
    except InvalidYaml as exc:
        return None, [exc.problem]
    problems, data = parsed.problems, parsed.data
    if data is None:
        return (None, problems) if problems else (Calendars(), [])
    try:
        calendars = Calendars.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(filename, parsed.positions, error) for error in exc.errors(include_url=False)]
        return None, sorted(set(problems))
    except RecursionError:
        return None, [Problem(filename, 1, 1, "the file is nested too deeply")]
    return (None, sorted(problems)) if problems else (calendars, [])


def load_calendars_file(path: Path) -> tuple[Calendars | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(path), 1, 1, f"cannot read the file: {exc}")]
    return load_calendars(text, str(path))


def _problem(filename: str, positions: Positions, error: Any) -> Problem:
    loc: Loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    # Our validators name the exact entry they object to: a weekday key, or a holiday by its index.
    if "at_key" in ctx:
        loc = (*loc, str(ctx["at_key"]), "[key]")
    elif "at_index" in ctx:
        loc = (*loc, int(ctx["at_index"]), "date")
    on_key = error["type"] == "extra_forbidden" or (bool(loc) and loc[-1] == "[key]")
    line, column = positions.of(loc, key=on_key and loc[-1] != "[key]")
    name = ".".join(str(step) for step in loc if step != "[key]") or "(top level)"
    return Problem(filename, line, column, f"{name}: {error['msg']}")
