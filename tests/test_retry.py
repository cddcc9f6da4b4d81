"""RetryPolicy and Retry-After: pure decisions, no source, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncd.config.model import Retries
from syncd.sync.retry import RetryPolicy, retry_after_seconds

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_the_policy_of_a_configuration_is_in_seconds() -> None:
    retries = Retries(attempts=3, backoff=timedelta(milliseconds=250), max_backoff=timedelta(10))
    assert RetryPolicy.of(retries) == RetryPolicy(3, 0.25, 864_000.0)


def test_attempts_count_every_try_the_first_included() -> None:
    policy = RetryPolicy(attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3)] == [True, True, False]
    assert not RetryPolicy(attempts=1).should_retry(1)


@pytest.mark.parametrize("status", [500, 502, 503, 599, 408, 429])
def test_server_errors_timeouts_and_429_are_retried(status: int) -> None:
    assert RetryPolicy.retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_client_errors_are_never_retried(status: int) -> None:
    assert not RetryPolicy.retryable_status(status)


def test_backoff_doubles_within_its_upper_half_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff=1.0, max_backoff=3.0)
    assert [policy.delay(n, jitter=0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]
    assert [policy.delay(n, jitter=0.999) for n in (1, 2, 3)] == pytest.approx(
        [1.0, 2.0, 3.0], 1e-3
    )


def test_retry_after_is_honoured_up_to_max_backoff() -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=30.0)
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert policy.delay(1, retry_after=3600.0) == 30.0
    assert policy.delay(5, retry_after=0.0) == 0.0


def test_the_policy_is_a_frozen_value() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.attempts = 2  # type: ignore[misc]
    assert policy == RetryPolicy(6, 0.5, 60.0)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("12", NOW) == 12.0
    assert retry_after_seconds(" 3 ", NOW) == 3.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", NOW) == 30.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", NOW) == 0.0  # past


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5"])
def test_an_absent_or_unreadable_retry_after_is_none(value: str | None) -> None:
    assert retry_after_seconds(value, NOW) is None
