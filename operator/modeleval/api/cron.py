"""Cron schedules exactly as Kubernetes reads a CronJob's, and when they fire. Pure: no clock;
every function takes the instants it reasons from.

What is accepted and refused is what the API server accepts and refuses in a CronJob's
``schedule`` (github.com/robfig/cron/v3's standard parser) and ``timeZone``:
- five fields split on any whitespace: minute (0-59), hour (0-23), day of month (1-31), month
  (1-12 or jan-dec), day of week (0-6 or sun-sat; 7 is refused); each a comma list (empty items
  ignored) of ``*`` or ``?``, ``N`` or ``N-M`` (names allowed), with an optional ``/step``;
  ``N/step`` runs from N to the field's end; a number is ASCII digits with an optional sign;
- ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``
  (exactly so written) and ``@every <Go duration>`` (whole seconds, at least one);
- no ``TZ`` anywhere in the schedule (the zone goes in ``timeZone``).
Days: when the day-of-month or the day-of-week field holds a ``*`` or ``?`` (not stepped by more
than 1), a day must match both; otherwise a day matching either fires.

When it fires is robfig's ``Schedule.Next`` in the zone, as the CronJob controller computes it,
with one difference, for daylight saving time (decided on the schedule's wall clock):
- a schedule whose hour field matches every hour (``@hourly``, ``*/5 * * * *``, ...) and
  ``@every`` follow elapsed time, as a CronJob does: none is lost or doubled at a change;
- a schedule with fixed hours (``30 2 * * *``, ``0 */2 * * *``) fires a wall-clock time skipped by
  a change once, at the first instant after the gap (a CronJob skips it), and a wall-clock time
  repeated by a change once, at its first occurrence (a CronJob fires it twice).
The run made after missed ones is the CronJob controller's (:func:`most_recent`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Bit 63 marks a field written as * or ? (it decides how the two day fields combine).
STAR = 1 << 63
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


FIELDS = (_Field("minute", 0, 59, {}), _Field("hour", 0, 23, {}),
          _Field("day of month", 1, 31, {}),
          _Field("month", 1, 12, {n: i for i, n in enumerate(_MONTHS, 1)}),
          _Field("day of week", 0, 6, {n: i for i, n in enumerate(_DAYS)}))
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@hourly": "0 * * * *"}
_EVERY = "@every "
# Go's whitespace (strings.Fields): the ASCII six and Unicode's White_Space characters.
_GO_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1
# Go's lower-casing maps this one non-ASCII letter onto a letter of the names (FRİ is Friday).
_GO_LOWER = str.maketrans({"\u0130": "i"})
_ALL_HOURS = (1 << 24) - 1
# A time zone name as the API server accepts one: components of these characters, 1-14 long.
ZONE_COMPONENT = r"[A-Za-z.\-_0-9+]{1,14}"
ZONE_PATTERN = rf"^{ZONE_COMPONENT}(/{ZONE_COMPONENT})*$"
_ZONE_COMPONENT = re.compile(ZONE_COMPONENT)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SECOND = timedelta(seconds=1)
# A robfig search gives up after five years without a match (30 February never matches).
_SEARCH_YEARS = 5
# robfig's search never ends for some days whose midnight is skipped (the CronJob controller
# then hangs); a legitimate search takes a few hundred steps.
_SEARCH_STEPS = 200_000
# The CronJob controller's threshold for "too many missed start times".
TOO_MANY_MISSED = 100


class CronError(ValueError):
    """A schedule Kubernetes refuses, or one that never fires; the message says which field
    and why."""


class EndlessSearch(CronError):
    """robfig's search would not end (Kubernetes' controller hangs on such a schedule)."""


# ----------------------------------------------------------------------------- parsing
def _go_int(text: str, where: str) -> int:
    """strconv.Atoi for a value that must not be negative."""
    if not _GO_INT.fullmatch(text) or abs(int(text)) > _INT64_MAX:
        raise CronError(f"{where}: '{text}' is not a number")
    if int(text) < 0:
        raise CronError(f"{where}: {text} is negative")
    return int(text)


def _value(text: str, f: _Field) -> int:
    named = f.names.get(text.translate(_GO_LOWER).lower())
    if named is not None:
        return named
    try:
        return _go_int(text, f.name)
    except CronError:
        if f.names:
            raise CronError(f"{f.name}: '{text}' is not a number or a name "
                            f"({', '.join(f.names)})") from None
        raise


def _bits(first: int, last: int, step: int) -> int:
    return sum(1 << i for i in range(first, last + 1, step))


def _range(item: str, f: _Field) -> int:
    """One comma-separated item of a field, as bits."""
    body, *steps = item.split("/")
    bounds = body.split("-")
    star = 0
    if bounds[0] in ("*", "?"):
        first, last, star = f.low, f.high, STAR  # what follows a leading * is not read
    else:
        if len(bounds) > 2:
            raise CronError(f"{f.name}: '{item}' has too many hyphens")
        first = _value(bounds[0], f)
        last = _value(bounds[1], f) if len(bounds) == 2 else first
    step = 1
    if len(steps) > 1:
        raise CronError(f"{f.name}: '{item}' has too many slashes")
    if steps:
        step = _go_int(steps[0], f"{f.name} step")
        if len(bounds) == 1:
            last = f.high
        if step > 1:
            star = 0
    if first < f.low:
        raise CronError(f"{f.name}: {first} is below {f.low} in '{item}'")
    if last > f.high:
        raise CronError(f"{f.name}: {last} is above {f.high} in '{item}'")
    if first > last:
        raise CronError(f"{f.name}: range '{item}' runs backwards")
    if step == 0:
        raise CronError(f"{f.name}: the step in '{item}' must be a positive number")
    return _bits(first, last, step) | star


def _field(text: str, f: _Field) -> int:
    bits = 0
    for item in text.split(","):
        if item:
            bits |= _range(item, f)
    return bits


def _every(text: str) -> int:
    """``@every <duration>``: whole seconds, at least one (robfig rounds down and up so)."""
    nanos = go_duration(text[len(_EVERY):])
    return max(nanos, 10**9) // 10**9


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: a bit set per field (bit 63: written as * or ?), or a fixed interval
    (``@every``)."""

    minute: int = 0
    hour: int = 0
    dom: int = 0
    month: int = 0
    dow: int = 0
    every: int | None = None  # seconds

    @classmethod
    def parse(cls, expression: str) -> "Cron":
        if not expression:
            raise CronError("the schedule is empty")
        if "TZ" in expression:
            raise CronError("TZ or CRON_TZ cannot be used in schedule: set timeZone instead")
        if expression.startswith(_EVERY):
            return cls(every=_every(expression))
        if expression.startswith("@"):
            if expression not in _DESCRIPTORS:
                raise CronError(f"unknown macro '{expression}' (@yearly, @annually, @monthly, "
                                "@weekly, @daily, @midnight, @hourly or @every <duration>)")
            expression = _DESCRIPTORS[expression]
        parts = [p for p in _GO_SPACE.split(expression) if p]
        if len(parts) != 5:
            raise CronError(f"the schedule has {len(parts)} fields; cron takes 5 (minute hour "
                            "day-of-month month day-of-week) or a macro such as @daily")
        return cls(*(_field(p, f) for p, f in zip(parts, FIELDS)))

    def _set(self, bits: int, f: _Field) -> frozenset[int]:
        return frozenset(i for i in range(f.low, f.high + 1) if bits >> i & 1)

    minutes = property(lambda self: self._set(self.minute, FIELDS[0]))
    hours = property(lambda self: self._set(self.hour, FIELDS[1]))
    days = property(lambda self: self._set(self.dom, FIELDS[2]))
    months = property(lambda self: self._set(self.month, FIELDS[3]))
    weekdays = property(lambda self: self._set(self.dow, FIELDS[4]))  # 0 = Sunday

    @property
    def follows_elapsed_time(self) -> bool:
        """Every hour matches (or a fixed interval): daylight saving changes are crossed in
        elapsed time, as a CronJob does."""
        return self.every is not None or self.hour & _ALL_HOURS == _ALL_HOURS

    @property
    def never_matches(self) -> bool:
        """A field left empty (``,``): no minute ever matches."""
        days = self.dom & ~STAR and self.dow & ~STAR if (self.dom | self.dow) & STAR \
            else (self.dom | self.dow) & ~STAR
        return self.every is None and not (self.minute and self.hour and self.month and days)

    def day_matches(self, t: datetime) -> bool:
        dom = self.dom >> t.day & 1
        dow = self.dow >> (t.isoweekday() % 7) & 1
        if (self.dom | self.dow) & STAR:
            return bool(dom and dow)
        return bool(dom or dow)

    def matches(self, t: datetime) -> bool:
        """Whether a wall-clock minute matches (month, day, hour, minute)."""
        return bool(self.month >> t.month & 1 and self.day_matches(t)
                    and self.hour >> t.hour & 1 and self.minute >> t.minute & 1)


_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9,
          "m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("1h30m", "90s", "1.5h")."""
    where = f"@every: '{text}' is not a duration (such as 90s, 5m or 1h30m)"
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    if not body:
        raise CronError(where)
    total, rest = 0, body
    while rest:
        match = _DURATION_PART.match(rest)
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if (not whole and not fraction) or unit not in _UNITS:
            raise CronError(where)
        total += _duration_part(whole, fraction or "", _UNITS[unit], where)
        rest = rest[match.end():]
    if total > (1 << 63) or (total == 1 << 63 and text[:1] != "-"):
        raise CronError(where + ": too long")
    return -total if text[:1] == "-" else total


def _duration_part(whole: str, fraction: str, unit: int, where: str) -> int:
    value = int(whole or "0")
    if value > (1 << 63) // unit:
        raise CronError(where + ": too long")
    value *= unit
    # Go keeps the fraction's digits while they fit in an int64 and scales by a float.
    kept, scale = 0, 1
    for digit in fraction:
        if kept > _INT64_MAX // 10 or kept * 10 + int(digit) > 1 << 63:
            break
        kept, scale = kept * 10 + int(digit), scale * 10
    if kept:
        value += int(float(kept) * (float(unit) / scale))
    if value > 1 << 63:
        raise CronError(where + ": too long")
    return value


def zone(name: str | None) -> ZoneInfo | timezone:
    """An IANA zone (``Europe/Berlin``), checked as the API server checks a CronJob's
    ``timeZone``; UTC when none is named."""
    if name is None:
        return timezone.utc
    if not name:
        raise CronError("timeZone must be unset or a non-empty string")
    for part in name.split("/"):
        if part in (".", "..") or part.startswith("-") or not _ZONE_COMPONENT.fullmatch(part):
            raise CronError(f"unknown time zone '{name}' (an IANA name such as Europe/Berlin)")
    if name.lower() == "local":
        raise CronError("timeZone must name a zone (such as Europe/Berlin), not Local")
    if name == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise CronError(f"unknown time zone '{name}' (an IANA name such as Europe/Berlin)"
                        ) from error


# ----------------------------------------------------------------------------- time, as Go has it
Zone = ZoneInfo | timezone


def _seconds(t: datetime) -> int:
    """Whole unix seconds, rounded down."""
    return (t.astimezone(timezone.utc) - _EPOCH) // _SECOND


def _utc(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _local(seconds: int, tz: Zone) -> datetime:
    return _utc(seconds).astimezone(tz)


def _offset(seconds: int, tz: Zone) -> int:
    return int(_local(seconds, tz).utcoffset().total_seconds())


def _go_date(tz: Zone, year: int, month: int, day: int, hour: int = 0, minute: int = 0,
             second: int = 0) -> int:
    """Go's time.Date: out-of-range parts carried over; a wall time in a gap or a repeat
    resolved by Go's rule (the offset in force at the wall time read as UTC, corrected once)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    days = date(year, month, 1).toordinal() - _EPOCH_ORDINAL + day - 1
    unix = days * 86400 + hour * 3600 + minute * 60 + second
    offset = _offset(unix, tz)
    if offset:
        corrected = _offset(unix - offset, tz)
        offset = corrected if corrected != offset else offset
    return unix - offset


def _add_date(t: int, tz: Zone, months: int = 0, days: int = 0) -> int:
    w = _local(t, tz)
    return _go_date(tz, w.year, w.month + months, w.day + days, w.hour, w.minute, w.second)


# ----------------------------------------------------------------------------- when it fires
def cronjob_next(c: Cron, tz: Zone, after: int) -> int | None:
    """robfig's ``Schedule.Next`` (the CronJob controller's): the first firing strictly after
    ``after`` (unix seconds), None when none comes within five years. Its search, step for step:
    each part is advanced until it matches; a part advanced past its end starts over from the
    year ("wraps"); a part once advanced puts the smaller ones at zero (Go's time.Date
    resolves the wall times so made)."""
    if c.every is not None:
        return after + c.every
    if c.never_matches:
        return None  # robfig's search ends so too, after five years of minutes
    t = after + 1
    limit = _local(t, tz).year + _SEARCH_YEARS
    search = _Search(c, tz, t)
    while True:
        if _local(search.t, tz).year > limit:
            return None
        if search.month() and search.day() and search.hour() and search.minute() \
                and search.second():
            return search.t


@dataclass
class _Search:
    """One robfig search; each step returns False when it wrapped (start over)."""

    c: Cron
    tz: Zone
    t: int
    reset: bool = False  # a part was advanced: the smaller ones start from zero
    steps: int = 0

    def now(self) -> datetime:
        self.steps += 1
        if self.steps > _SEARCH_STEPS:
            raise EndlessSearch(f"robfig's search for a run after {_utc(self.t)} does not end")
        return _local(self.t, self.tz)

    def start(self, *wall: int) -> None:
        if not self.reset:
            self.reset, self.t = True, _go_date(self.tz, *wall)

    def month(self) -> bool:
        while not self.c.month >> self.now().month & 1:
            w = self.now()
            self.start(w.year, w.month, 1)
            self.t = _add_date(self.t, self.tz, months=1)
            if self.now().month == 1:
                return False
        return True

    def day(self) -> bool:
        while not self.c.day_matches(self.now()):
            w = self.now()
            self.start(w.year, w.month, w.day)
            self.t = _add_date(self.t, self.tz, days=1)
            hour = self.now().hour
            if hour:  # that day's midnight was skipped or repeated
                self.t += (24 - hour) * 3600 if hour > 12 else -hour * 3600
            if self.now().day == 1:
                return False
        return True

    def hour(self) -> bool:
        while not self.c.hour >> self.now().hour & 1:
            w = self.now()
            self.start(w.year, w.month, w.day, w.hour)
            self.t += 3600
            if self.now().hour == 0:
                return False
        return True

    def minute(self) -> bool:
        while not self.c.minute >> self.now().minute & 1:
            if not self.reset:
                self.reset, self.t = True, self.t - self.t % 60
            self.t += 60
            if self.now().minute == 0:
                return False
        return True

    def second(self) -> bool:
        while self.now().second:  # the standard parser's seconds field is 0
            self.reset, self.t = True, self.t + 1
            if self.now().second == 0:
                return False
        return True


def _first_instant(wall: datetime, tz: Zone) -> int:
    """The instant a wall-clock minute fires at: its first occurrence, or, for a time skipped
    by a change, the first instant after the gap."""
    first = _seconds(wall.replace(tzinfo=tz, fold=0))
    if _local(first, tz).replace(tzinfo=None) == wall:
        return first
    # In a gap: before it the wall clock is behind ``wall``, after it ahead; find the change.
    low, high = _seconds(wall.replace(tzinfo=tz, fold=1)), first
    low, high = min(low, high), max(low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if _local(middle, tz).replace(tzinfo=None) > wall:
            high = middle
        else:
            low = middle
    return high


def _next_wall(c: Cron, wall: datetime, last_year: int) -> datetime | None:
    """The first matching wall-clock minute strictly after ``wall`` (naive), or None past
    ``last_year``."""
    t = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t.year <= last_year:
        if not c.month >> t.month & 1:
            t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
        elif not c.day_matches(t):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
        elif not c.hour >> t.hour & 1:
            t = t.replace(minute=0) + timedelta(hours=1)
        elif not c.minute >> t.minute & 1:
            t += timedelta(minutes=1)
        else:
            return t
    return None


def _wall_clock_next(c: Cron, tz: Zone, after: int) -> int | None:
    wall = _local(after, tz).replace(tzinfo=None)
    last_year = _local(after + 1, tz).year + _SEARCH_YEARS
    while (wall := _next_wall(c, wall, last_year)) is not None:
        instant = _first_instant(wall, tz)
        if instant > after:
            return instant
    return None


def next_run(c: Cron, tz: Zone, after: datetime) -> datetime | None:
    """The first instant (UTC) strictly after ``after`` at which the schedule fires; None when
    none comes within five years (as robfig gives up)."""
    seconds = _seconds(after)
    if c.never_matches:
        return None
    if c.follows_elapsed_time:
        found = cronjob_next(c, tz, seconds)
    else:
        found = _wall_clock_next(c, tz, seconds)
    return None if found is None else _utc(found)


@dataclass(frozen=True)
class Missed:
    """The CronJob controller's answer after a time away: the run to make (None: none due)
    and its estimate of how many runs fell due (``due - 1`` of them are not made)."""

    latest: datetime | None
    due: int = 0

    @property
    def too_many(self) -> bool:
        return self.due > TOO_MANY_MISSED


def cronjob_next_run(c: Cron, tz: Zone, after: datetime) -> datetime | None:
    """:func:`cronjob_next` on datetimes (as :func:`next_run`, without our DST rule)."""
    found = cronjob_next(c, tz, _seconds(after))
    return None if found is None else _utc(found)


def most_recent(c: Cron, tz: Zone, earliest: datetime, now: datetime,
                firing: Callable[[Cron, Zone, datetime], datetime | None] = next_run) -> Missed:
    """The CronJob controller's missed-run rule (mostRecentScheduleTime): the latest firing in
    (earliest, now], found from the spacing of the first two firings after ``earliest`` (an
    estimate that spares counting every missed run). Raises CronError for a schedule that
    never fires (30 February). ``firing``: the rule that says when it fires."""
    t1 = firing(c, tz, earliest)
    t2 = None if t1 is None else firing(c, tz, t1)
    if t1 is not None and now < t1:
        return Missed(None)
    if t1 is not None and t2 is not None and now < t2:
        return Missed(t1)
    if t1 is None or t2 is None:
        raise CronError("the schedule never fires (e.g. 30 February)")
    between = int((t2 - t1).total_seconds())
    due = int((now - t1).total_seconds()) // between + 1
    latest, t = None, firing(c, tz, t1 + timedelta(seconds=(due - 2) * between))
    while t is not None and t <= now:
        latest, t = t, firing(c, tz, t)
    return Missed(latest, due)
