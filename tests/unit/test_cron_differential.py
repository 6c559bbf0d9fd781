"""Our cron against Kubernetes' own: hack/crondiff (github.com/robfig/cron/v3 as the CronJob
controller uses it, and the API server's checks) answers thousands of generated cases, and this
test holds our parser, our firing times and our missed-run rule to its answers.

Where our firing times differ on purpose (daylight saving time with fixed hours, documented in
cron.py and the docs' Schedules page), the test asserts the documented behaviour instead, computed from
robfig's runs and the zone's transitions as Go reports them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from modeleval.api import cron as cr
from tests.testbed.tools import REPO_ROOT, tools_dir

SOURCE = REPO_ROOT / "hack" / "crondiff"
SEED = 27
CASES = 5000
RUNS = 5

ZONES = [None, "UTC", "America/New_York", "Europe/Berlin", "Europe/London", "Australia/Lord_Howe",
         "Asia/Kolkata", "Asia/Kathmandu", "America/Santiago", "America/Havana", "Asia/Beirut",
         "Pacific/Chatham", "Antarctica/Troll", "America/St_Johns", "Africa/Casablanca",
         "Asia/Tehran", "Australia/Adelaide", "Etc/GMT+5", "America/Sao_Paulo",
         "America/Asuncion", "Pacific/Apia"]
BAD_ZONES = ["Mars/Olympus", "Local", "local", "", "Europe//Berlin", "../etc/passwd", "-Foo",
             "Europe/Berlin/", "Europe/Kaliningrad_And_More", "europe/berlin", "UTC ",
             "America/New York", "Etc/GMT+5:30"]


# ----------------------------------------------------------------------------- the oracle
def _oracle_binary() -> Path:
    """Built once per input (sources, Go version), cached outside the checkout."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is not installed (needed to build hack/crondiff)")
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    version = subprocess.run([go, "version"], capture_output=True, text=True, env=env,
                             check=True).stdout
    digest = hashlib.sha256(version.encode())
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    binary = tools_dir() / f"crondiff-{digest.hexdigest()[:16]}" / "crondiff"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        subprocess.run([go, "build", "-o", str(partial), "."], cwd=SOURCE, env=env, check=True)
        partial.replace(binary)
    return binary


def ask(requests: list[dict]) -> list[dict]:
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    done = subprocess.run([str(_oracle_binary())], input=lines, capture_output=True, text=True,
                          check=True, timeout=120)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(requests)
    return answers


# ----------------------------------------------------------------------------- the cases
def _number(rng: random.Random, low: int, high: int) -> str:
    value = rng.randint(low, high)
    return rng.choice([str(value)] * 8 + [f"0{value}", f"+{value}", str(high + 1),
                                          str(low - 1), "٣", "５", "1_0", "99999999999999999999",
                                          " ", "x"])


def _item(rng: random.Random, f: cr._Field) -> str:
    n = lambda: _number(rng, f.low, f.high)  # noqa: E731
    names = list(f.names) or [str(f.low)]
    forms = [lambda: "*", lambda: "?", lambda: f"*/{rng.randint(1, 9)}", n,
             lambda: f"{n()}-{n()}", lambda: f"{n()}-{n()}/{rng.randint(0, 7)}",
             lambda: f"{n()}/{rng.randint(1, 5)}", lambda: rng.choice(names),
             lambda: rng.choice(names).upper(), lambda: f"{rng.choice(names)}-{rng.choice(names)}",
             lambda: f"{rng.choice(names)}/2", lambda: "*/", lambda: f"{n()}-{n()}/",
             lambda: f"/{rng.randint(1, 5)}", lambda: f"*-{n()}", lambda: f"{n()}-{n()}-{n()}",
             lambda: f"{n()}/2/3", lambda: "*/1", lambda: "?/3", lambda: "FRİ", lambda: "7",
             lambda: "1/3", lambda: "", lambda: f"{n()}-"]
    return rng.choice(forms)()


def _field(rng: random.Random, f: cr._Field) -> str:
    if rng.random() < 0.7:
        return rng.choice(["*", "*", "?", str(f.low), str(rng.randint(f.low, f.high))])
    items = [_item(rng, f) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    if rng.random() < 0.15:
        items.insert(rng.randrange(len(items) + 1), "*")
    return ",".join(items)


WHOLE = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly",
         "@Daily", " @daily", "@daily ", "@every 90s", "@every 1h30m", "@every 500ms",
         "@every -5m", "@every 1.5h", "@every 0", "@every x", "@every", "@every  5m",
         "@every 2h0.5m", "@every 1µs", "@reboot", "TZ=UTC 0 * * * *", "CRON_TZ=UTC * * * * *",
         "", "* * * *", "* * * * * *", "0 0 30 2 *", "0 0 31 4 *", "0 0 29 2 *",
         "0\t0 * * *", "0\u3000 0 * * *", "0\x1c0 * * *", "0 0 * * * ", "30 2 * * *",
         "30 1 * * *", "0 0 * * *", "*/15 2 * * *", "0 */2 * * *", "0 * * * *", "30 * * * *"]


def expression(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(WHOLE)
    fields = [_field(rng, f) for f in cr.FIELDS]
    if rng.random() < 0.5:  # most real schedules fix the minute and often the hour
        fields[0] = str(rng.randint(0, 59))
        fields[1] = rng.choice([fields[1], str(rng.randint(0, 3)), "1,2", "*"])
    return rng.choice([" ", " ", "  ", "\t"]).join(fields)


def start_instant(rng: random.Random) -> int:
    """Biased to the months of daylight saving changes and to round instants."""
    year = rng.randint(2000, 2045)
    month = rng.choice([3, 3, 4, 9, 10, 10, 11, 1, 2, 6])
    t = datetime(year, month, rng.randint(1, 28), tzinfo=timezone.utc) + timedelta(
        seconds=rng.randrange(86400))
    seconds = int(t.timestamp())
    return seconds - seconds % rng.choice([1, 60, 3600])


def cases(seed: int = SEED, count: int = CASES) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        start = start_instant(rng)
        now = start + rng.choice([0, 59, 61, 3599, 3600 * 5, 86400 * 3, 86400 * 40,
                                  86400 * 400]) + rng.randrange(60)
        out.append({"expr": expression(rng),
                    "zone": rng.choice(BAD_ZONES) if rng.random() < 0.05 else rng.choice(ZONES),
                    "start": start, "runs": RUNS, "now": now,
                    "deadline": rng.choice([None, None, 30, 3600, 86400 * 2])})
    return out


# ----------------------------------------------------------------------------- our answers
def _error(call) -> str:
    try:
        call()
    except cr.CronError as error:
        return str(error) or "refused"
    return ""


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _chain(step, start: int, count: int) -> list[int]:
    out, t = [], start
    for _ in range(count):
        t = step(t)
        if t is None:
            break
        out.append(t)
    return out


def _ours(c: cr.Cron, tz, start: int, until: int) -> list[int]:
    """Our firings in (start, until]."""
    out, t = [], _at(start)
    while (t := cr.next_run(c, tz, t)) is not None and t <= _at(until):
        out.append(int(t.timestamp()))
    return out


def documented(c: cr.Cron, tz, answer: dict, start: int) -> list[int]:
    """What cron.py documents for fixed-hour schedules across a change, from robfig's runs: a
    wall time repeated by a change fires only at its first occurrence; a matching wall time
    skipped by a change fires once, at the change; a run of robfig's at a wall time that does
    not match (its steps, counted in elapsed time, drift past a change) is not made."""
    runs, last = answer["runs"], answer["runs"][-1]
    kept = {r for r in runs if c.matches(_at(r).astimezone(tz))
            and not any(before > after and at <= r < at + before - after
                        for at, before, after in answer["transitions"])}
    gaps = {at for at, before, after in answer["transitions"]
            if after > before and start < at <= last
            and any(c.matches(_at(at + before + m * 60)) for m in range((after - before) // 60))}
    return sorted(kept | gaps)


def _first_occurrence_matches(c: cr.Cron, tz, seconds: int) -> bool:
    wall = _at(seconds).astimezone(tz)
    return c.matches(wall) and not wall.fold


def _check_documented(c: cr.Cron, tz, case: dict, answer: dict, tally: Tally) -> None:
    """Every documented firing is ours; a firing of ours robfig lacks beyond those is a
    matching wall-clock time (first occurrence) that robfig's search stepped over (after a
    change at midnight or by half an hour its steps drift off the hour: docs/guide/schedules.md)."""
    expected = documented(c, tz, answer, case["start"])
    ours = _ours(c, tz, case["start"], answer["runs"][-1])
    tally.check("firings (documented DST rule)", case, [r for r in expected if r not in ours], [])
    extra = [r for r in ours if r not in expected]
    tally.check("firings robfig steps over", case,
                [r for r in extra if not _first_occurrence_matches(c, tz, r)], [])
    if extra:
        tally.count("robfig steps over a matching time")


def _missed(c: cr.Cron, tz, case: dict, firing=cr.next_run) -> tuple:
    earliest = case["start"]
    if case["deadline"] is not None:
        earliest = max(earliest, case["now"] - case["deadline"])
    try:
        found = cr.most_recent(c, tz, _at(earliest), _at(case["now"]), firing)
    except cr.EndlessSearch:
        raise
    except cr.CronError:
        return None, 0, True
    latest = None if found.latest is None else int(found.latest.timestamp())
    return latest, found.due, False


# ----------------------------------------------------------------------------- the comparison
class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.disagreements: list[str] = []

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def check(self, what: str, case: dict, ours, theirs) -> bool:
        if ours != theirs:
            self.disagreements.append(f"{what}: {case!r}: ours {ours!r}, Kubernetes {theirs!r}")
        return ours == theirs


def compare(case: dict, answer: dict, tally: Tally) -> None:
    schedule_error = _error(lambda: cr.Cron.parse(case["expr"]))
    zone_error = "" if case["zone"] is None else _error(lambda: cr.zone(case["zone"]))
    if not tally.check("accepted schedule", case, not schedule_error,
                       not answer.get("scheduleError")):
        return
    if not tally.check("accepted timeZone", case, not zone_error, not answer.get("zoneError")):
        return
    if schedule_error or zone_error:
        return tally.count("refused")
    c, tz = cr.Cron.parse(case["expr"]), cr.zone(case["zone"])
    theirs = (answer.get("bits"), answer.get("every"))
    ours = (None, c.every) if c.every is not None else ([c.minute, c.hour, c.dom, c.month, c.dow],
                                                        None)
    if not tally.check("fields", case, ours, theirs):
        return
    if answer.get("endless"):
        return _endless(c, tz, case, tally)
    tally.check("robfig's Next", case, _chain(lambda t: cr.cronjob_next(c, tz, t), case["start"],
                                               RUNS), answer["runs"])
    tally.check("the controller's missed-run rule", case, _missed(c, tz, case,
                                                                  cr.cronjob_next_run),
                _theirs_missed(answer))
    across_change = bool(answer["transitions"]) and not c.follows_elapsed_time
    if answer["runs"] and across_change:
        _check_documented(c, tz, case, answer, tally)
    elif answer["runs"]:
        tally.check("firings", case, _ours(c, tz, case["start"], answer["runs"][-1]),
                    answer["runs"])
    else:
        tally.check("never fires", case, cr.next_run(c, tz, _at(case["start"])), None)
    tally.count("compared across a change" if across_change else "compared exactly")
    if across_change:
        return  # the missed-run rule runs on our firings, which differ there on purpose
    tally.check("missed-run rule", case, _missed(c, tz, case), _theirs_missed(answer))


def _theirs_missed(answer: dict) -> tuple:
    return answer["recent"], answer["missed"], bool(answer.get("recentError"))


def _endless_search(call) -> bool:
    try:
        call()
    except cr.EndlessSearch:
        return True
    return False


def _endless(c: cr.Cron, tz, case: dict, tally: Tally) -> None:
    """robfig's search does not end here: ours says so where it follows robfig, and fires
    anyway where it follows the wall clock."""
    tally.count("robfig's search does not end")
    tally.check("robfig's search does not end", case, _endless_search(
        lambda: _chain(lambda t: cr.cronjob_next(c, tz, t), case["start"], RUNS))
        or _endless_search(lambda: _missed(c, tz, case, cr.cronjob_next_run)), True)
    if not c.follows_elapsed_time:
        tally.check("wall-clock firing where robfig's search does not end", case,
                    cr.next_run(c, tz, _at(case["start"])) is not None, True)


def test_schedules_are_read_and_fired_as_kubernetes_reads_and_fires_them():
    generated = cases()
    zones = [z for z in (*ZONES, *BAD_ZONES) if z is not None]
    generated += [{"expr": "0 9 * * *", "zone": z, "start": 1774000000, "runs": RUNS,
                   "now": 1774000000 + 86400 * 3, "deadline": None} for z in zones]
    # An empty field never matches (robfig gives up after five years of minutes: slow there).
    generated += [{"expr": e, "zone": "Europe/Berlin", "start": 1774000000, "runs": RUNS,
                   "now": 1774000000 + 86400, "deadline": None}
                  for e in (",,, * * * *", "0 0 , * ,")]
    tally = Tally()
    for case, answer in zip(generated, ask(generated)):
        compare(case, answer, tally)
    kinds = sorted({d.partition(":")[0] for d in tally.disagreements})
    assert not tally.disagreements, (f"{len(tally.disagreements)} disagreements ({kinds}), the "
                                     "first: " + "\n".join(tally.disagreements[:15]))
    # The cases reach every kind of answer, the documented one included.
    assert tally.counts["refused"] > 300 and tally.counts["compared exactly"] > 1000
    assert tally.counts["compared across a change"] > 100
