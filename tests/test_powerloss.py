"""Power loss from a recorded syscall trace: the fsync rule and crash states.

``bench/powerloss.py`` holds the harness (its docstring says what is modelled and
what is not). The workload runs once under strace per module; every test here
replays that one trace.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_program

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the root
    sys.path.insert(0, str(ROOT))
from bench.crashload import Outcome  # noqa: E402
from bench.powerloss import VARIANTS, crash_state, record, replay  # noqa: E402
from bench.strace_parse import Call  # noqa: E402

Recorded = tuple[list[Call], Outcome, Path]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    require_program("strace", "strace")
    work = tmp_path_factory.mktemp("powerloss")
    yield record(work / "rec")


def test_every_acknowledgement_follows_the_fsyncs_it_relies_on(recorded: Recorded) -> None:
    """At each ack: no WAL byte unsynced, and every name on the path to it durable.

    Before the fix the data directory was never fsynced into its parent, so a
    power cut could lose the whole directory with every acknowledged write.
    """
    calls, out, data_dir = recorded
    acks = 0
    violations: set[str] = set()
    for step, _ in replay(calls, data_dir.parent, data_dir.name):
        acks += step.ack
        violations.update(step.violations)
    assert acks == len(out.ops), "the trace should show every operation's acknowledgement"
    assert not violations


def _states(recorded: Recorded, n: int, ignore_sync: str = "") -> list[str]:
    """Check the states at about ``n`` crash points spread evenly, the last one included."""
    calls, out, data_dir = recorded
    steps = sum(1 for _ in replay(calls, data_dir.parent, data_dir.name))
    every = max(1, steps // n)
    problems: list[str] = []
    most = 0
    base = data_dir.parent.parent / f"states{ignore_sync}"
    base.mkdir(exist_ok=True)
    for k, (step, model) in enumerate(replay(calls, data_dir.parent, data_dir.name, ignore_sync)):
        if k % every and k != steps - 1:
            continue
        for variant in VARIANTS:
            v = crash_state(model, step, out, variant, base)
            problems += [f"call {step.index} {variant}: {p}" for p in v.problems]
        most = max(most, step.acked)
    assert most == len(out.ops), "the states should reach the end of the workload"
    return problems


def test_power_loss_states_keep_every_acknowledged_point(recorded: Recorded) -> None:
    # About 20 crash points spread over the whole trace, three states each;
    # `python -m bench.powerloss` checks all of them.
    assert not _states(recorded, 20)


def test_the_check_finds_the_loss_when_the_wal_is_not_fsynced(recorded: Recorded) -> None:
    """The same states with the WAL segments' fsyncs ignored must show the damage.

    (Lost acknowledged points, or a start refused because a segment before the
    last lost its never-synced header.)
    """
    problems = _states(recorded, 10, ignore_sync="wal-")
    assert any("acknowledged points lost" in p or "open failed" in p for p in problems)
