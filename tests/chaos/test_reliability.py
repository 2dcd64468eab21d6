"""The fault-and-load run (tools/reliability.py) as a test: none lost, none over its retry policy, every
reattached client answered with its run's result. `make reliability` runs it longer and writes docs/reliability.md."""

import pytest

from tools.reliability import run

pytestmark = pytest.mark.slow


async def test_no_request_is_lost_under_faults_and_load() -> None:
    report = await run(clients=4, load_s=45.0)
    assert report.accepted > 0 and len(report.faults) >= 5
    assert report.lost == []
    assert report.completed + report.failed_cleanly == report.accepted
    assert report.over_retry_policy == []
    assert report.reattached_same_answer == report.reattached
    assert report.total_s < 180
