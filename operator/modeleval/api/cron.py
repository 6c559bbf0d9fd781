"""Cron expressions (five fields, as Kubernetes CronJob reads them) and when they fire, in a time
zone. Pure: no clock; every function takes the instant it reasons from.

Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec), day of week
(0-7 or sun-sat, 0 and 7 both Sunday); each a list of ``*``, ``N``, ``N-M``, with an optional
``/step``. When both day of month and day of week are restricted, a day matching either fires
(Vixie cron's rule). ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``,
``@midnight`` and ``@hourly`` stand for their usual expressions.

Daylight saving time, decided on wall-clock time in the schedule's zone:
- a wall-clock time that does not exist (the hour skipped when clocks go forward) fires at the
  first instant after the gap, once, so a daily 02:30 run is not lost that day;
- a wall-clock time that happens twice (the hour repeated when clocks go back) fires once, at
  its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}
MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names)
FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
          ("month", 1, 12, MONTHS), ("day of week", 0, 7, DAYS))
# A loose shape for the CRD (the API server cannot parse cron): five fields or a macro.
CRON_PATTERN = r"^(@[a-z]+|\S+( \S+){4})$"
_MINUTE = timedelta(minutes=1)
# A matching time exists within 8 years for any expression that matches at all (29 February
# with a restricted weekday repeats at the latest after 8 years, across 2100).
_HORIZON_YEARS = 9


class CronError(ValueError):
    """An expression that is not valid cron; the message says which field and why."""


def _value(text: str, names: dict[str, int], what: str) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(f"{what}: '{text}' is not a number" + (
            f" or a name ({', '.join(names)})" if names else ""))
    return int(text)


def _field(text: str, what: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{what}: step '{step_text}' must be a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _value(a, names, what), _value(b, names, what)
        elif body:
            first = _value(body, names, what)
            last = high if step_text else first
        else:
            raise CronError(f"{what}: empty item in '{text}'")
        for bound in (first, last):
            if not low <= bound <= high:
                raise CronError(f"{what}: {bound} is outside {low}-{high}")
        if first > last:
            raise CronError(f"{what}: range {body} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed expression."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> "Cron":
        text = MACROS.get(expression.strip().lower(), expression)
        parts = text.split()
        if len(parts) != 5:
            raise CronError(f"'{expression}' has {len(parts)} fields; cron takes 5 (minute hour "
                            "day-of-month month day-of-week) or a macro such as @daily")
        sets = [_field(p, *spec) for p, spec in zip(parts, FIELDS)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(sets[0], sets[1], sets[2], sets[3], weekdays,
                   days_restricted=parts[2] != "*" and not parts[2].startswith("*/"),
                   weekdays_restricted=parts[4] != "*" and not parts[4].startswith("*/"))

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def next_wall(self, after: datetime) -> datetime:
        """The first matching wall-clock minute strictly after ``after`` (naive; no zone)."""
        t = after.replace(second=0, microsecond=0) + _MINUTE
        horizon = after.year + _HORIZON_YEARS
        while t.year <= horizon:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += _MINUTE
            else:
                return t
        raise CronError("the expression never matches a date (e.g. 30 February)")


def zone(name: str | None) -> ZoneInfo | timezone:
    """An IANA zone (``Europe/Berlin``); UTC when none is named."""
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise CronError(f"unknown time zone '{name}' (an IANA name such as Europe/Berlin)") from error


def _instant(wall: datetime, tz: ZoneInfo | timezone) -> datetime:
    """The UTC instant a wall-clock minute fires at: its first occurrence, or, for a time in a
    gap, the first minute after the gap."""
    first = wall.replace(tzinfo=tz, fold=0)
    if first.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == wall:
        return first.astimezone(timezone.utc)
    # In a gap: fold=1 reads the wall time with the offset before the change, which lands
    # before the gap; walk forward to the first minute past it (a gap is at most hours).
    t = wall.replace(tzinfo=tz, fold=1).astimezone(timezone.utc).replace(second=0, microsecond=0)
    while t.astimezone(tz).replace(tzinfo=None) < wall:
        t += _MINUTE
    return t


def next_run(cron: Cron, tz: ZoneInfo | timezone, after: datetime) -> datetime:
    """The first instant (UTC) strictly after ``after`` at which the schedule fires."""
    after = after.astimezone(timezone.utc)
    wall = after.astimezone(tz).replace(tzinfo=None)
    while True:
        wall = cron.next_wall(wall)
        instant = _instant(wall, tz)
        if instant > after:
            return instant


def last_run(cron: Cron, tz: ZoneInfo | timezone, after: datetime, now: datetime
             ) -> tuple[datetime | None, int]:
    """The latest firing in (after, now], and how many firings were missed before it (counted
    within the window searched: a day, a month, a year, then everything since ``after``; cron
    repeats yearly, so a schedule dense enough to make the count costly is found in the first
    windows)."""
    for window in (timedelta(days=1), timedelta(days=32), timedelta(days=400), None):
        start = after if window is None else max(after, now - window)
        latest, count = None, 0
        t = next_run(cron, tz, start)
        while t <= now:
            latest, count = t, count + 1
            t = next_run(cron, tz, t)
        if latest is not None or start == after:
            return latest, max(0, count - 1)
    raise AssertionError("unreachable")
