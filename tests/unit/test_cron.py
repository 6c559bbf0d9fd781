"""Cron as Kubernetes reads a CronJob's schedule, and when it fires, in UTC and across daylight
saving changes. test_cron_differential.py holds all of it to Kubernetes' own code on thousands
of cases; these are the cases a reader checks by eye."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from modeleval.api.cron import Cron, CronError, most_recent, next_run, zone

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


@pytest.mark.parametrize("expression, says", [
    ("* * * *", "4 fields"), ("* * * * * *", "6 fields"), ("", "empty"),
    ("60 * * * *", "minute: 60 is above 59"), ("* 24 * * *", "hour: 24 is above 23"),
    ("* * 0 * *", "day of month: 0 is below 1"), ("* * * 13 *", "month: 13 is above 12"),
    ("* * * * 7", "day of week: 7 is above 6"), ("* * * * 1-7", "day of week: 7"),
    ("*/0 * * * *", "minute: the step"), ("5-1 * * * *", "minute: range '5-1' runs backwards"),
    ("* * * foo *", "month: 'foo' is not a number or a name"),
    ("*/ * * * *", "minute step: '' is not a number"),
    ("1-5/ * * * *", "minute step: '' is not a number"),
    ("/5 * * * *", "minute: '' is not a number"), ("1-2-3 * * * *", "too many hyphens"),
    ("1/2/3 * * * *", "too many slashes"), ("-1 * * * *", "minute: '' is not a number"),
    ("٣ * * * *", "minute: '٣' is not a number"), ("５ * * * *", "minute: '５' is not a number"),
    ("1_0 * * * *", "not a number"), ("@every5m", "unknown macro"), ("@Daily", "unknown macro"),
    ("@daily ", "unknown macro"), (" @daily", "1 fields"), ("@every x", "@every: 'x'"),
    ("@every 5", "@every: '5'"), ("TZ=UTC 0 * * * *", "timeZone"),
    ("CRON_TZ=Europe/Berlin 0 * * * *", "timeZone"),
])
def test_what_kubernetes_refuses_is_refused_naming_the_field(expression, says):
    with pytest.raises(CronError, match=says.replace("*", r"\*").replace("(", r"\(")):
        Cron.parse(expression)


@pytest.mark.parametrize("expression", [
    "? ? ? ? ?", "@every 90s", "@every 1h30m", "@every 1.5h", "@every -5m", "@every 0",
    "1,,2 * * * *", ", * * * *", "+5 * * * *", "05 * * * *", "*-5 * * * *", "* * * * FRİ",
    "0\t0 * * *", "0\u3000 0 * * *", "0 0 30 2 *", "* * * * sun-sat", "0 0 * * MON/2",
])
def test_what_kubernetes_accepts_is_accepted(expression):
    Cron.parse(expression)


def test_fields_ranges_steps_lists_and_names():
    c = Cron.parse("0,30 9-17/4 * jan-mar mon-fri")
    assert c.minutes == {0, 30} and c.hours == {9, 13, 17}
    assert c.months == {1, 2, 3} and c.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("5/15 * * * *").minutes == {5, 20, 35, 50}
    # 1/3 in day of week runs from 1 to 6 (not to 7, which would add Sunday).
    assert Cron.parse("* * * * 1/3").weekdays == {1, 4}
    assert Cron.parse("@daily") == Cron.parse("0 0 * * *")
    assert Cron.parse("@every 1h30m").every == 5400
    assert Cron.parse("@every 500ms").every == 1 == Cron.parse("@every -5m").every


def test_a_star_in_either_day_field_makes_both_needed_otherwise_either_fires():
    # Both restricted: the 13th, or any Friday. 2026-02-06 is a Friday, 2026-02-13 both.
    assert firings("0 0 13 * fri", UTC, at(2026, 2, 1), 3) == [
        at(2026, 2, 6), at(2026, 2, 13), at(2026, 2, 20)]
    assert firings("0 0 * * fri", UTC, at(2026, 2, 1), 1) == [at(2026, 2, 6)]
    # */2 restricts (odd days), so a Friday that is an even day fires too (2026-02-06).
    assert firings("0 0 */2 * fri", UTC, at(2026, 2, 3, 1), 3) == [
        at(2026, 2, 5), at(2026, 2, 6), at(2026, 2, 7)]
    # A * inside a list is a star: only Fridays that are the 13th... or any day: both needed.
    assert firings("0 0 13 * fri,*", UTC, at(2026, 2, 1), 1) == [at(2026, 2, 13)]


def test_every_minute_every_five_and_a_fixed_interval():
    assert firings("* * * * *", UTC, at(2026, 1, 1, 0, 0, 30), 3) == [
        at(2026, 1, 1, 0, 1), at(2026, 1, 1, 0, 2), at(2026, 1, 1, 0, 3)]
    assert firings("*/5 * * * *", UTC, at(2026, 1, 1, 0, 5), 2) == [
        at(2026, 1, 1, 0, 10), at(2026, 1, 1, 0, 15)]
    assert firings("@every 90s", UTC, at(2026, 1, 1, 0, 0, 10), 2) == [
        at(2026, 1, 1, 0, 1, 40), at(2026, 1, 1, 0, 3, 10)]


def test_leap_day_month_ends_and_a_date_that_never_comes():
    assert firings("0 12 29 2 *", UTC, at(2026, 1, 1), 2) == [at(2028, 2, 29, 12), at(2032, 2, 29, 12)]
    assert firings("0 0 31 * *", UTC, at(2026, 1, 31, 1), 2) == [at(2026, 3, 31), at(2026, 5, 31)]
    assert next_run(Cron.parse("0 0 30 2 *"), UTC, at(2026, 1, 1)) is None
    assert next_run(Cron.parse(", * * * *"), UTC, at(2026, 1, 1)) is None


def test_a_time_zone_moves_the_instant():
    # 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    assert firings("0 9 * * *", BERLIN, at(2026, 1, 10), 1) == [at(2026, 1, 10, 8)]
    assert firings("0 9 * * *", BERLIN, at(2026, 7, 10), 1) == [at(2026, 7, 10, 7)]


def test_spring_forward_a_skipped_fixed_time_fires_once_right_after_the_gap():
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 does not exist.
    # A CronJob skips that day's run; ours fires at 03:00 EDT.
    assert firings("30 2 * * *", NY, at(2026, 3, 7, 12), 3) == [
        at(2026, 3, 8, 7, 0), at(2026, 3, 9, 6, 30), at(2026, 3, 10, 6, 30)]
    # Every quarter hour of the skipped hour fires once, at 03:00 EDT, not four times.
    assert firings("*/15 2 * * *", NY, at(2026, 3, 8, 6), 2) == [at(2026, 3, 8, 7), at(2026, 3, 9, 6)]
    # Every two hours: 02:00 is skipped by the clocks, so it fires at 03:00 EDT, then 04:00.
    assert firings("0 */2 * * *", NY, at(2026, 3, 8, 4, 30), 3) == [
        at(2026, 3, 8, 5), at(2026, 3, 8, 7), at(2026, 3, 8, 8)]


def test_fall_back_a_repeated_fixed_time_fires_once_at_its_first_occurrence():
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:30 happens twice.
    # A CronJob fires at both; ours at the first.
    assert firings("30 1 * * *", NY, at(2026, 10, 31, 12), 2) == [
        at(2026, 11, 1, 5, 30), at(2026, 11, 2, 6, 30)]
    # Asked from inside the repeated hour (01:10 EST, the second pass): not fired again.
    assert next_run(Cron.parse("30 1 * * *"), NY, at(2026, 11, 1, 6, 10)) == at(2026, 11, 2, 6, 30)
    assert firings("0 9 * * *", NY, at(2026, 10, 31, 14), 2) == [at(2026, 11, 1, 14), at(2026, 11, 2, 14)]


def test_hourly_and_more_frequent_schedules_follow_elapsed_time():
    # Spring: 01:00 EST, then 03:00 EDT, one hour of elapsed time later; none lost.
    assert firings("@hourly", NY, at(2026, 3, 8, 5, 30), 3) == [
        at(2026, 3, 8, 6), at(2026, 3, 8, 7), at(2026, 3, 8, 8)]
    # Fall: 01:00 EDT and 01:00 EST both fire, an hour apart; none lost, none doubled.
    assert firings("@hourly", NY, at(2026, 11, 1, 4, 30), 4) == [
        at(2026, 11, 1, 5), at(2026, 11, 1, 6), at(2026, 11, 1, 7), at(2026, 11, 1, 8)]
    assert firings("*/30 * * * *", NY, at(2026, 11, 1, 5, 10), 4) == [
        at(2026, 11, 1, 5, 30), at(2026, 11, 1, 6), at(2026, 11, 1, 6, 30), at(2026, 11, 1, 7)]


def test_the_missed_run_is_the_cronjob_controllers():
    found = most_recent(Cron.parse("* * * * *"), UTC, at(2026, 1, 1), at(2026, 1, 1, 0, 10, 30))
    assert (found.latest, found.due) == (at(2026, 1, 1, 0, 10), 10)
    assert most_recent(Cron.parse("0 * * * *"), UTC, at(2026, 1, 1), at(2026, 1, 1, 0, 59)).latest is None
    # Only the next one due: made, nothing missed.
    found = most_recent(Cron.parse("0 * * * *"), UTC, at(2026, 1, 1), at(2026, 1, 1, 1, 30))
    assert (found.latest, found.due) == (at(2026, 1, 1, 1), 0)
    # After months away, the latest, found from the spacing of the first two runs.
    found = most_recent(Cron.parse("0 0 1 * *"), UTC, at(2025, 1, 15), at(2026, 3, 20))
    assert found.latest == at(2026, 3, 1)
    found = most_recent(Cron.parse("0 0 29 2 *"), UTC, at(2020, 6, 1), at(2026, 3, 20))
    assert found.latest == at(2024, 2, 29)
    # Over 100 due: the controller's "too many missed start times".
    found = most_recent(Cron.parse("* * * * *"), UTC, at(2025, 1, 1), at(2026, 1, 1, 0, 0, 5))
    assert found.latest == at(2026, 1, 1) and found.too_many
    with pytest.raises(CronError, match="never fires"):
        most_recent(Cron.parse("0 0 30 2 *"), UTC, at(2026, 1, 1), at(2027, 1, 1))


@pytest.mark.parametrize("name, says", [
    ("Mars/Olympus", "unknown time zone"), ("Local", "not Local"), ("", "non-empty"),
    ("Europe//Berlin", "unknown"), ("../etc", "unknown"), ("-Foo", "unknown"),
    ("A_Component_Too_Long/X", "unknown"),
])
def test_unknown_zones_are_refused(name, says):
    with pytest.raises(CronError, match=says):
        zone(name)


def test_zones():
    assert zone(None) is UTC and zone("UTC") is UTC
    assert next_run(Cron.parse("0 0 * * *"), zone("Etc/GMT+5"), at(2026, 1, 1)) == at(2026, 1, 1, 5)
    assert next_run(Cron.parse("0 0 * * *"), zone("UTC"), at(2026, 1, 1)) - at(2026, 1, 1) == timedelta(days=1)
