"""Pure parts of the xDS streams: the backoff between re-offers of a NACKed response."""

from __future__ import annotations

from federation.xds.stream import StreamSettings, nack_backoff


def test_nack_backoff_doubles_up_to_its_bound() -> None:
    settings = StreamSettings(nack_retry_base=1.0, nack_retry_max=300.0)
    delays = [nack_backoff(attempt, settings) for attempt in range(1, 12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays == sorted(delays)
    assert max(delays) == 300.0
    assert nack_backoff(10_000, settings) == 300.0  # no overflow after many NACKs


def test_default_backoff_never_resends_in_a_loop() -> None:
    settings = StreamSettings()
    assert nack_backoff(1, settings) >= 1.0
    assert settings.warm_timeout > settings.push_interval
