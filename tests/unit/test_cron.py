"""Cron parsing and when a schedule fires, in UTC and across daylight saving changes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from modeleval.api.cron import Cron, CronError, last_run, next_run, zone

UTC = timezone.utc
NY, BERLIN = zone("America/New_York"), zone("Europe/Berlin")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def firings(expression: str, tz, start: datetime, count: int) -> list[datetime]:
    cron, out, t = Cron.parse(expression), [], start
    for _ in range(count):
        t = next_run(cron, tz, t)
        out.append(t)
    return out


@pytest.mark.parametrize("expression, field", [
    ("* * * *", "fields"), ("60 * * * *", "minute"), ("* 24 * * *", "hour"),
    ("* * 0 * *", "day of month"), ("* * * 13 *", "month"), ("* * * * 8", "day of week"),
    ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"), ("* * * foo *", "month"),
    ("1,,2 * * * *", "empty"), ("@every5m", "fields"),
])
def test_bad_expressions_name_the_field(expression, field):
    with pytest.raises(CronError, match=field):
        Cron.parse(expression)


def test_fields_ranges_steps_lists_and_names():
    c = Cron.parse("0,30 9-17/4 * jan-mar mon-fri")
    assert c.minutes == {0, 30} and c.hours == {9, 13, 17}
    assert c.months == {1, 2, 3} and c.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("* * * * 7").weekdays == {0} == Cron.parse("* * * * sun").weekdays
    assert Cron.parse("5/15 * * * *").minutes == {5, 20, 35, 50}
    assert Cron.parse("@daily") == Cron.parse("0 0 * * *")
    assert Cron.parse("@hourly") == Cron.parse("0 * * * *")


def test_every_minute_and_every_five():
    assert firings("* * * * *", UTC, at(2026, 1, 1, 0, 0, 30), 3) == [
        at(2026, 1, 1, 0, 1), at(2026, 1, 1, 0, 2), at(2026, 1, 1, 0, 3)]
    assert firings("*/5 * * * *", UTC, at(2026, 1, 1, 0, 5), 2) == [
        at(2026, 1, 1, 0, 10), at(2026, 1, 1, 0, 15)]


def test_day_of_month_or_day_of_week_when_both_are_restricted():
    # The 13th, or any Friday (Vixie cron): 2026-02-06 is a Friday, 2026-02-13 both.
    assert firings("0 0 13 * fri", UTC, at(2026, 2, 1), 3) == [
        at(2026, 2, 6), at(2026, 2, 13), at(2026, 2, 20)]
    # Only the day of week restricted: only Fridays.
    assert firings("0 0 * * fri", UTC, at(2026, 2, 1), 1) == [at(2026, 2, 6)]


def test_leap_day_and_month_ends():
    assert firings("0 12 29 2 *", UTC, at(2026, 1, 1), 2) == [at(2028, 2, 29, 12), at(2032, 2, 29, 12)]
    assert firings("0 0 31 * *", UTC, at(2026, 1, 31, 1), 2) == [at(2026, 3, 31), at(2026, 5, 31)]
    with pytest.raises(CronError, match="never"):
        next_run(Cron.parse("0 0 30 2 *"), UTC, at(2026, 1, 1))


def test_a_time_zone_moves_the_instant():
    # 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    assert firings("0 9 * * *", BERLIN, at(2026, 1, 10), 1) == [at(2026, 1, 10, 8)]
    assert firings("0 9 * * *", BERLIN, at(2026, 7, 10), 1) == [at(2026, 7, 10, 7)]


def test_spring_forward_a_skipped_time_fires_once_right_after_the_gap():
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 does not exist.
    assert firings("30 2 * * *", NY, at(2026, 3, 7, 12), 3) == [
        at(2026, 3, 8, 7, 0), at(2026, 3, 9, 6, 30), at(2026, 3, 10, 6, 30)]
    # Every quarter hour of the skipped hour fires once, at 03:00 EDT, not four times.
    assert firings("*/15 2 * * *", NY, at(2026, 3, 8, 6), 2) == [at(2026, 3, 8, 7), at(2026, 3, 9, 6)]
    # Hourly: 01:00 EST, then 03:00 EDT (one hour of elapsed time later).
    assert firings("0 * * * *", NY, at(2026, 3, 8, 5, 30), 3) == [
        at(2026, 3, 8, 6), at(2026, 3, 8, 7), at(2026, 3, 8, 8)]


def test_fall_back_a_repeated_time_fires_once_at_its_first_occurrence():
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:30 happens twice.
    assert firings("30 1 * * *", NY, at(2026, 10, 31, 12), 2) == [
        at(2026, 11, 1, 5, 30), at(2026, 11, 2, 6, 30)]
    # Asked from inside the repeated hour (01:10 EST, the second pass): not fired again.
    assert next_run(Cron.parse("30 1 * * *"), NY, at(2026, 11, 1, 6, 10)) == at(2026, 11, 2, 6, 30)
    # Daily 09:00 keeps its wall-clock time across the change.
    assert firings("0 9 * * *", NY, at(2026, 10, 31, 14), 2) == [at(2026, 11, 1, 14), at(2026, 11, 2, 14)]


def test_last_run_is_the_latest_missed_time_and_counts_the_others():
    assert last_run(Cron.parse("* * * * *"), UTC, at(2026, 1, 1), at(2026, 1, 1, 0, 10, 30)) == (
        at(2026, 1, 1, 0, 10), 9)
    assert last_run(Cron.parse("0 * * * *"), UTC, at(2026, 1, 1), at(2026, 1, 1, 0, 59)) == (None, 0)
    # A monthly schedule after months of downtime: the latest (found in the month's window,
    # which is all that is counted), and a yearly one found only in the widest window.
    assert last_run(Cron.parse("0 0 1 * *"), UTC, at(2025, 1, 15), at(2026, 3, 20)) == (
        at(2026, 3, 1), 0)
    assert last_run(Cron.parse("0 0 1 1 *"), UTC, at(2020, 6, 1), at(2026, 3, 20)) == (
        at(2026, 1, 1), 0)
    assert last_run(Cron.parse("0 0 29 2 *"), UTC, at(2020, 6, 1), at(2026, 3, 20)) == (
        at(2024, 2, 29), 0)
    # A dense schedule after a year away costs one day's scan, not a year's.
    latest, missed = last_run(Cron.parse("* * * * *"), UTC, at(2025, 1, 1), at(2026, 1, 1, 0, 0, 5))
    assert latest == at(2026, 1, 1) and missed == 24 * 60 - 1


def test_unknown_zone():
    with pytest.raises(CronError, match="time zone"):
        zone("Mars/Olympus")
    assert zone(None) is UTC
    assert next_run(Cron.parse("0 0 * * *"), zone("UTC"), at(2026, 1, 1)) - at(2026, 1, 1) == timedelta(days=1)
