import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.hours import (
    Calendars,
    UnknownCalendar,
    hours_json_schema,
    load_calendars,
    load_calendars_file,
    now_variables,
    parse_span,
    weekdays_of,
)
from tests.paths import SHIPPED_DIALPLANS

DIALPLANS = SHIPPED_DIALPLANS  # these tests are of the shipped files themselves
MADRID = ZoneInfo("Europe/Madrid")
UTC = dt.UTC


def calendars(text: str) -> Calendars:
    loaded, problems = load_calendars(text, "hours.yaml")
    assert problems == [] and loaded is not None, problems
    return loaded


def problems(text: str) -> list[str]:
    loaded, found = load_calendars(text, "hours.yaml")
    assert loaded is None and found
    assert all(p.file == "hours.yaml" for p in found)
    return [f"{p.line}:{p.column}: {p.message}" for p in found]


def at(text: str, zone: dt.tzinfo = MADRID) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone)


SHOP = """\
calendars:
  shop:
    timezone: Europe/Madrid
    weekly:
      mon-fri: [09:00-14:00, 16:00-19:00]
      sat: [10:00-13:30]
      sun: []
    holidays:
      - {date: 2026-12-25, name: Navidad}
      - {date: 2026-12-24, name: Nochebuena, hours: [10:00-12:00]}
      - date: 2026-12-31
        hours: []
"""


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        ("2026-11-23T08:59:59", False),  # Monday
        ("2026-11-23T09:00", True),
        ("2026-11-23T13:59:59", True),
        ("2026-11-23T14:00", False),  # the end is excluded
        ("2026-11-23T15:30", False),  # between the two ranges
        ("2026-11-23T16:00", True),
        ("2026-11-27T18:59", True),  # Friday
        ("2026-11-27T19:00", False),
        ("2026-11-28T13:29", True),  # Saturday
        ("2026-11-28T13:30", False),
        ("2026-11-29T11:00", False),  # Sunday: an empty list is closed
        ("2026-12-25T11:00", False),  # a holiday on a Friday
        ("2026-12-24T11:59", True),  # special hours replace Thursday's
        ("2026-12-24T12:00", False),
        ("2026-12-24T16:30", False),
        ("2026-12-31T10:00", False),  # `hours: []` is closed too
    ],
)
def test_weekly_ranges_and_holidays(moment: str, is_open: bool) -> None:
    assert calendars(SHOP).is_open("shop", at(moment)) is is_open


def test_now_in_another_zone_is_converted() -> None:
    shop = calendars(SHOP)
    assert shop.is_open("shop", at("2026-11-23T08:30", UTC)) is True  # 09:30 in Madrid (CET, UTC+1)
    assert shop.is_open("shop", at("2026-11-23T03:30", ZoneInfo("America/Bogota"))) is True  # 09:30 in Madrid
    assert shop.is_open("shop", at("2026-11-23T07:30", UTC)) is False


NIGHT = """\
calendars:
  night:
    timezone: Europe/Madrid
    weekly:
      fri: [22:00-02:00]
      sun: [20:00-24:00]
      mon: [23:00-00:30]
    holidays:
      - {date: 2026-12-04, name: closed friday}
"""


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        ("2026-11-27T21:59", False),  # Friday
        ("2026-11-27T22:00", True),
        ("2026-11-27T23:59", True),
        ("2026-11-28T00:00", True),  # Saturday: Friday's range runs on
        ("2026-11-28T01:59", True),
        ("2026-11-28T02:00", False),
        ("2026-11-29T23:59", True),  # Sunday until 24:00
        ("2026-11-30T00:00", False),  # ... which ends at Monday's midnight
        ("2026-11-30T23:30", True),  # Monday overnight into Tuesday
        ("2026-12-01T00:29", True),
        ("2026-12-01T00:30", False),
        ("2026-12-04T23:00", False),  # a holiday Friday: closed, overnight tail included
        ("2026-12-05T01:00", False),
    ],
)
def test_overnight_ranges(moment: str, is_open: bool) -> None:
    assert calendars(NIGHT).is_open("night", at(moment)) is is_open


def test_holiday_after_an_overnight_range_keeps_the_tail() -> None:
    text = NIGHT.replace("name: closed friday}", "name: closed friday}\n      - {date: 2026-11-28}")
    night = calendars(text)
    assert night.is_open("night", at("2026-11-28T01:00")) is True  # Friday's range owns its tail
    assert night.is_open("night", at("2026-11-27T23:00")) is True


EVERY_DAY = """\
calendars:
  daily:
    timezone: Europe/Madrid
    weekly:
      mon-sun: [01:00-02:30, 08:00-20:00]
"""


@pytest.mark.parametrize(
    ("utc", "is_open"),
    [
        # Sunday 2026-03-29: clocks go from 02:00 to 03:00 (CET+1 -> CEST+2).
        ("2026-03-29T00:30", True),  # 01:30 CET
        ("2026-03-29T01:00", False),  # 03:00 CEST: 02:00-02:30 never happened
        ("2026-03-29T05:59", False),  # 07:59 CEST
        ("2026-03-29T06:00", True),  # 08:00 CEST (the day before, 08:00 was 07:00 UTC)
        ("2026-03-28T06:00", False),  # 07:00 CET
        ("2026-03-29T17:59", True),  # 19:59 CEST
        ("2026-03-29T18:00", False),
        # Sunday 2026-10-25: clocks go from 03:00 back to 02:00 (CEST -> CET); 02:00-02:59 happens twice.
        ("2026-10-24T23:30", True),  # 01:30 CEST
        ("2026-10-25T00:15", True),  # 02:15 CEST
        ("2026-10-25T01:15", True),  # 02:15 CET, the second time
        ("2026-10-25T01:30", False),  # 02:30 CET
        ("2026-10-25T06:59", False),  # 07:59 CET
        ("2026-10-25T07:00", True),  # 08:00 CET (the day before, 08:00 was 06:00 UTC)
        ("2026-10-24T06:00", True),
        ("2026-10-25T19:00", False),  # 20:00 CET
    ],
)
def test_daylight_saving_days_in_madrid(utc: str, is_open: bool) -> None:
    assert calendars(EVERY_DAY).is_open("daily", at(utc, UTC)) is is_open


def test_shipped_calendars() -> None:
    shipped, found = load_calendars_file(DIALPLANS / "hours.yaml")
    assert found == [] and shipped is not None
    assert {"support", "always"} <= shipped.ids()
    support = shipped.get("support")
    assert support.timezone == "Europe/Madrid"
    assert shipped.is_open("support", at("2026-11-23T08:00")) is True  # Monday
    assert shipped.is_open("support", at("2026-11-23T20:00")) is False
    assert shipped.is_open("support", at("2026-11-28T13:00")) is True  # Saturday
    assert shipped.is_open("support", at("2026-11-29T10:00")) is False  # Sunday
    for holiday in ["2026-01-06", "2026-04-03", "2026-10-12", "2026-12-08", "2027-03-26", "2027-12-08"]:
        assert shipped.is_open("support", at(f"{holiday}T10:00")) is False, holiday
    christmas = support.holiday(at("2026-12-25T10:00"))
    assert christmas is not None and christmas.name == "Navidad"
    assert shipped.is_open("support", at("2026-12-24T13:00")) is True  # Nochebuena: mornings only
    assert shipped.is_open("support", at("2026-12-24T15:00")) is False
    for moment in ["2026-12-25T03:00", "2027-06-06T23:59", "2026-03-29T02:30"]:
        assert shipped.is_open("always", at(moment, UTC)) is True


def test_unknown_calendar_and_naive_time() -> None:
    shop = calendars(SHOP)
    with pytest.raises(UnknownCalendar, match=r"calendar 'nope' is not in hours.yaml \(known: shop\)"):
        shop.is_open("nope", at("2026-11-23T10:00"))
    with pytest.raises(ValueError, match="needs a time zone"):
        shop.is_open("shop", dt.datetime(2026, 11, 23, 10, 0))


def test_empty_text_means_no_calendars() -> None:
    for text in ["", "# nothing yet\n"]:
        loaded, found = load_calendars(text, "hours.yaml")
        assert found == [] and loaded is not None and loaded.ids() == frozenset()


def test_problems_point_at_the_place() -> None:
    text = (
        "calendars:\n"  # 1
        "  a:\n"  # 2
        "    timezone: Mars/Olympus\n"  # 3
        "    weekly:\n"  # 4
        "      monday: [09:00-10:00]\n"  # 5
        "  b:\n"  # 6
        "    timezone: UTC\n"  # 7
        "    weekly:\n"  # 8
        "      mon: [09:00-25:00, 10:00-10:00, 9-17, 24:00-02:00, '09:60-10:00']\n"  # 9
        "      tue: 09:00-14:00\n"  # 10
        "      wed: [14:00]\n"  # 11
        "    holidays:\n"  # 12
        "      - {date: 2026-13-01}\n"  # 13
        "      - {date: 2026-01-01, colour: red}\n"  # 14
        "      - {date: 20260101}\n"  # 15
        "  c:\n"  # 16
        "    timezone: localtime\n"  # 17
        "    weekly: {mon-fri: [09:00-10:00], fri: [11:00-12:00]}\n"  # 18
        "    holidays:\n"  # 19
        "      - {date: 2026-05-01, name: Trabajo}\n"  # 20
        "      - {date: 2026-05-02}\n"  # 21
        "      - {date: 2026-05-01, name: again}\n"  # 22
        "  bad id: {timezone: UTC}\n"  # 23
        "  d: {weekly: {}}\n"  # 24
    )
    found = problems(text)
    assert found == [
        "3:15: calendars.a.timezone: unknown time zone 'Mars/Olympus': use an IANA name such as Europe/Madrid, "
        "America/Bogota or UTC",
        "5:7: calendars.a.weekly.monday: unknown weekday 'monday': use mon, tue, wed, thu, fri, sat, sun or a range "
        "such as mon-fri",
        "9:13: calendars.b.weekly.mon.0: '25:00' is not a time of day: 00:00 to 23:59, and 24:00 only as the end of "
        "a range",
        "9:26: calendars.b.weekly.mon.1: '10:00-10:00' starts and ends at the same time: for the whole day write "
        "00:00-24:00",
        "9:39: calendars.b.weekly.mon.2: '9-17' is not a range of hours: write HH:MM-HH:MM, e.g. 09:00-14:00",
        "9:45: calendars.b.weekly.mon.3: '24:00' is not a time of day: 00:00 to 23:59, and 24:00 only as the end of "
        "a range",
        "9:58: calendars.b.weekly.mon.4: '09:60' is not a time of day: 00:00 to 23:59, and 24:00 only as the end of "
        "a range",
        "10:12: calendars.b.weekly.tue: write the hours of a day as a list, even a single range: [09:00-14:00]",
        "11:13: calendars.b.weekly.wed.0: 840 is not a range of hours: write HH:MM-HH:MM, e.g. 09:00-14:00 (YAML "
        "reads a lone 14:00 as a number)",
        "13:16: calendars.b.holidays.0.date: Input should be a valid date or datetime, month value is outside "
        "expected range of 1-12",
        "14:28: calendars.b.holidays.1.colour: Extra inputs are not permitted",
        "15:16: calendars.b.holidays.2.date: a holiday date is written YYYY-MM-DD, e.g. 2026-12-25",
        "17:15: calendars.c.timezone: unknown time zone 'localtime': use an IANA name such as Europe/Madrid, "
        "America/Bogota or UTC",
        "18:38: calendars.c.weekly.fri: fri is given twice: in 'mon-fri' and in 'fri'",
        "22:16: calendars.c.holidays.2.date: holiday 2026-05-01 is listed twice (first as entry 1 of holidays)",
        "23:3: calendars.bad id: String should match pattern '^[A-Za-z_][A-Za-z0-9_-]*$'",
        "24:6: calendars.d.timezone: Field required",
    ]


def test_yaml_syntax_and_duplicate_keys() -> None:
    assert problems("calendars:\n  a: {timezone: UTC\n  b: x\n")[0].startswith("3:4: invalid YAML")
    found = problems("calendars:\n  a: {timezone: UTC}\n  a: {timezone: UTC}\n")
    assert found == ["3:3: duplicate key 'a' (first at line 2)"]
    assert problems("- a\n- b\n") == ["1:1: (top level): Input should be a valid dictionary or instance of Calendars"]


def test_unreadable_file(tmp_path: Path) -> None:
    loaded, found = load_calendars_file(tmp_path / "absent.yaml")
    assert loaded is None and found[0].line == 1 and "cannot read" in found[0].message


@pytest.mark.parametrize(
    ("key", "days"),
    [("mon", [0]), ("Sun", [6]), ("mon-fri", [0, 1, 2, 3, 4]), ("fri-mon", [4, 5, 6, 0]), ("sat-sun", [5, 6])],
)
def test_weekday_keys(key: str, days: list[int]) -> None:
    assert weekdays_of(key) == days


@pytest.mark.parametrize(("text", "span"), [("00:00-24:00", (0, 1440)), ("9:30 - 17:00", (570, 1020))])
def test_ranges(text: str, span: tuple[int, int]) -> None:
    assert parse_span(text) == span


def test_now_variables() -> None:
    moment = dt.datetime(2026, 11, 23, 13, 5, tzinfo=UTC)
    assert now_variables(moment, "Europe/Madrid") == {
        "date": "2026-11-23",
        "time": "14:05",
        "weekday": "mon",
        "hour": 14,
        "minute": 5,
        "timezone": "Europe/Madrid",
    }
    assert now_variables(moment, None)["time"] == "13:05"
    assert now_variables(dt.datetime(2026, 11, 23, 23, 30, tzinfo=UTC), "Europe/Madrid")["weekday"] == "tue"


def test_json_schema_names_the_file_parts() -> None:
    schema = hours_json_schema()
    assert schema["title"] == "Hilo business hours"
    assert {"timezone", "weekly", "holidays"} <= set(schema["$defs"]["Calendar"]["properties"])


RANGES = st.tuples(st.integers(0, 47), st.integers(1, 48)).map(lambda t: (t[0] * 30, (t[0] * 30 + t[1] * 30) % 1440))


@settings(max_examples=200, deadline=None)
@given(
    week=st.lists(st.lists(RANGES.filter(lambda r: r[0] != r[1]), max_size=3), min_size=7, max_size=7),
    minutes=st.integers(0, 60 * 24 * 14 - 1),
)
def test_is_open_matches_a_minute_by_minute_model(week: list[list[tuple[int, int]]], minutes: int) -> None:
    """Against the plain reading of the rules: every range opens the minutes from its start to its end,
    the end on the next day when it comes before the start."""

    def hhmm(m: int) -> str:
        return f"{m // 60:02d}:{m % 60:02d}"

    weekly = {
        day: [f"{hhmm(s)}-{hhmm(e) if e else '24:00'}" for s, e in ranges]
        for day, ranges in zip(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), week, strict=True)
    }
    loaded = Calendars.model_validate({"calendars": {"c": {"timezone": "UTC", "weekly": weekly}}})
    open_minutes: set[int] = set()  # minutes of a repeating week, from Monday 00:00
    for day, ranges in enumerate(week):
        for s, e in ranges:
            length = (e - s) % 1440 or 1440
            open_minutes |= {(day * 1440 + s + i) % (7 * 1440) for i in range(length)}
    monday = dt.datetime(2026, 11, 23, tzinfo=UTC)
    moment = monday + dt.timedelta(minutes=minutes)
    assert loaded.is_open("c", moment) is (minutes % (7 * 1440) in open_minutes)
