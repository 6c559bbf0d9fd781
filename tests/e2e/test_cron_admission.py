"""The API server itself judges the generated schedules: each (schedule, timeZone) of the unit
differential test goes to the bed's kube-apiserver as a CronJob (a server dry run), and our
parser accepts exactly the ones it admits. The unit test's oracle re-states the server's checks
in Go; this asks the server."""

from __future__ import annotations

import json
import subprocess

import pytest

from modeleval.api.cron import Cron, CronError, zone
from testbed import Tools
from tests.unit.test_cron_differential import BAD_ZONES, WHOLE, ZONES, cases

pytestmark = pytest.mark.e2e


def cronjob(index: int, schedule: str, time_zone: str | None) -> dict:
    spec = {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "OnFailure"}}}}}
    if time_zone is not None:
        spec["timeZone"] = time_zone
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": f"cj-{index}"},
            "spec": spec}


def ours(schedule: str, time_zone: str | None) -> bool:
    try:
        Cron.parse(schedule)
        zone(time_zone)
    except CronError:
        return False
    return True


def test_the_api_server_admits_exactly_the_schedules_we_accept(bed):
    pairs = sorted({(c["expr"], c["zone"]) for c in cases(count=1500)}
                   | {(w, None) for w in WHOLE}
                   | {("0 9 * * *", z) for z in (*ZONES, *BAD_ZONES)}, key=repr)
    listing = {"apiVersion": "v1", "kind": "List",
               "items": [cronjob(i, s, z) for i, (s, z) in enumerate(pairs)]}
    result = subprocess.run([str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}",
                             "create", "--dry-run=server", "-n", "default", "-o", "name",
                             "-f", "-"], input=json.dumps(listing), capture_output=True,
                            text=True, timeout=300)
    admitted = set(result.stdout.split())
    assert admitted, result.stderr[-2000:]
    disagreements = [(s, z, ours(s, z)) for i, (s, z) in enumerate(pairs)
                     if ours(s, z) != (f"cronjob.batch/cj-{i}" in admitted)]
    assert not disagreements, f"{len(disagreements)} of {len(pairs)}: {disagreements[:10]}"
    assert 100 < len(admitted) < len(pairs) - 100  # both answers are well represented
