"""The worker's Kafka clients get the batching and long-poll that streams/transport.py sets,
not Faust's defaults (16 KB producer batches, a 1.5 s fetch wait); benchmarks/RESULTS.md has
what each measured."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from driftline.platform.config import Config, config_from_mapping
from driftline.streams.app import DriftlineApp
from driftline.streams.catalog import ModelCatalog
from driftline.streams.transport import PRODUCER_MAX_BATCH_BYTES


def _app(config: Config) -> DriftlineApp:
    return DriftlineApp(config, ModelCatalog(config))


def _fetch_wait_ms(app: DriftlineApp) -> int:
    async def built() -> Any:  # aiokafka clients are made inside a running loop
        thread = app.faust.consumer._new_consumer_thread()
        return thread._create_worker_consumer(app.faust.transport)

    return asyncio.run(built())._fetch_max_wait_ms


def test_the_producer_batches_up_to_a_megabyte_per_partition_without_lingering() -> None:
    """aiokafka sends one request per broker at a time with one batch per partition in it: at
    Faust's 16 KB every join block or partial travelled alone."""
    settings = _app(Config()).faust.producer._settings_default()
    assert settings["max_batch_size"] == PRODUCER_MAX_BATCH_BYTES == 1024 * 1024
    assert settings["linger_ms"] == 0  # batching by what arrives during a round trip only


def test_the_consumer_long_polls_ten_milliseconds_not_faust_s_one_and_a_half_seconds() -> None:
    """The embedded broker answers a fetch only when its wait ends: each internal hop cost up
    to the whole wait in alert latency."""
    assert _fetch_wait_ms(_app(Config())) == 10


def test_fetch_wait_in_the_config_reaches_the_consumer() -> None:
    config = config_from_mapping({"fetch_wait": "250ms"})
    assert config.fetch_wait_ms == 250
    assert _fetch_wait_ms(_app(config)) == 250


@pytest.mark.parametrize("bad", ["0s", "6s", -1, "soon", None])
def test_a_fetch_wait_out_of_range_stops_loading_naming_the_key(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^fetch_wait must be a duration above 0 and at most 5000 ms"):
        config_from_mapping({"fetch_wait": bad})
