"""The gathering policy of a kernel source's loop, without a kernel: at low
rates a record never waits; at high rates the loop waits, never longer than
the bound; ``Pipeline(latency=...)`` and ``--latency`` set the bound."""

from __future__ import annotations

import pytest
from clirun import flowtrace

from flowtrace import Pipeline
from flowtrace.errors import PipelineDefinitionError
from flowtrace.gathering import DEFAULT_LATENCY, SMALL_BATCH, Gathering
from flowtrace.testing import CollectSink, ListSource


def waits(policy: Gathering, rate: float, per_read: int, seconds: float = 1.0) -> list[float]:
    """What the policy answers to reads of ``per_read`` records arriving at
    ``rate`` records/s for ``seconds`` (the loop's clock, simulated)."""
    answers = []
    now = 0.0
    while now < seconds:
        answers.append(policy.after_read(per_read, now))
        now += per_read / rate
    return answers


@pytest.mark.parametrize("rate", [10, 1_000])
def test_at_low_rates_a_record_goes_on_without_waiting(rate: int) -> None:
    policy = Gathering(DEFAULT_LATENCY, capacity=100_000)
    assert set(waits(policy, rate, per_read=1)) == {0.0}
    assert policy.rate == pytest.approx(rate, rel=0.05)


def test_at_high_rates_records_gather_for_at_most_the_bound() -> None:
    policy = Gathering(DEFAULT_LATENCY, capacity=100_000)
    answers = waits(policy, 100_000, per_read=100)
    # the first 50 ms measure the rate; from then on every read waits the bound
    assert answers[:50] == [0.0] * 50
    assert set(answers[51:]) == {DEFAULT_LATENCY}


def test_a_smaller_bound_waits_less_and_starts_at_a_higher_rate() -> None:
    assert set(waits(Gathering(0.001, 100_000), 10_000, per_read=10)) == {0.0}
    assert max(waits(Gathering(0.001, 100_000), 100_000, per_read=100)) == 0.001
    assert set(waits(Gathering(0.0, 100_000), 1_000_000, per_read=100)) == {0.0}


def test_the_wait_never_risks_filling_the_buffer() -> None:
    # 1,000 records of room at 100,000/s fill in 10 ms: wait a quarter of that
    answers = waits(Gathering(DEFAULT_LATENCY, capacity=1_000), 100_000, per_read=100)
    assert max(answers) == pytest.approx(0.0025)


def test_a_reader_behind_the_producers_never_waits() -> None:
    policy = Gathering(DEFAULT_LATENCY, capacity=100_000)
    assert set(waits(policy, 1_000_000, per_read=SMALL_BATCH)) == {0.0}


def test_while_records_come_fast_an_empty_read_waits_at_most_the_bound() -> None:
    policy = Gathering(DEFAULT_LATENCY, capacity=100_000)
    waits(policy, 100_000, per_read=100, seconds=0.2)
    assert policy.fast
    assert policy.after_read(0, 0.2) == 0.0  # nothing read: nothing to gather
    assert policy.poll(max_wait=0.05) == DEFAULT_LATENCY
    # records stop: once a whole span of reads has measured that (within
    # two spans), waits are long again
    for now in (0.25, 0.3, 0.35):
        assert policy.after_read(0, now) == 0.0
    assert not policy.fast and policy.rate == 0
    assert policy.poll(max_wait=0.05) == 0.05


def test_slow_records_are_not_fast() -> None:
    policy = Gathering(DEFAULT_LATENCY, capacity=100_000)
    waits(policy, 1_000, per_read=1)
    assert not policy.fast and policy.poll(max_wait=0.05) == 0.05
    policy.after_read(SMALL_BATCH, 1.0)  # a reader behind is fast at once
    assert policy.fast


@pytest.mark.parametrize("bad", [-0.001, float("nan")])
def test_a_negative_bound_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="must be >= 0 seconds"):
        Gathering(bad, capacity=1)


def test_the_pipeline_carries_its_bound_through_replace() -> None:
    source = ListSource([1, 2, 3])
    pipeline = Pipeline(source, [], CollectSink[int](), latency=0.002)
    assert pipeline.latency == 0.002
    assert pipeline.replace(name="x").latency == 0.002
    assert pipeline.replace(latency=0).latency == 0
    assert Pipeline(source, [], CollectSink[int]()).latency is None


@pytest.mark.parametrize("bad", [-1, 61, "5", float("nan")])
def test_a_bad_bound_fails_the_plan_with_one_line(bad: object) -> None:
    with pytest.raises(PipelineDefinitionError, match="give seconds from 0 to 60"):
        Pipeline(ListSource([1]), [], CollectSink[int](), latency=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", "61", "nan", "soon"])
def test_the_latency_option_takes_seconds_from_0_to_60(value: str) -> None:
    result = flowtrace("run", f"--latency={value}", "pipelines/sys_sync.py")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"flowtrace: error: argument --latency: {value!r} is not a number of seconds"
        " from 0 to 60; see flowtrace run --help\n"
    )
