"""ccmon's producers checksum record batches in native code: kafka-python[crc32c] (pyproject.toml).

kafka-python checksums every record batch it produces (CRC-32C). Without the ``crc32c`` package it does so in
pure Python, at ~150 ms of CPU per MB: ~20 µs per event for `ccmon send`, `ccmon simulate`, the HTTP ingest and
the Asterisk adapter, against ~3 with it (docs/performance.md).
"""

from __future__ import annotations

import logging
import os

import crc32c
import pytest
from kafka.record import util
from kafka.record._crc32c import crc as crc_pure_python

from streams import producer


def test_kafka_python_checksums_in_native_code() -> None:
    assert producer.native_crc(), "install ccmon with its dependencies: kafka-python[crc32c] brings crc32c"
    assert util.crc32c_c is crc32c.crc32c
    data = os.urandom(4096)
    assert util.calc_crc32c(memoryview(data)) == crc_pure_python(data)


def test_pure_python_checksums_warn_once_and_say_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(util, "crc32c_c", None)  # as kafka-python sets it when crc32c does not import
    monkeypatch.setattr(producer, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="ccmon.producer"):
        assert producer.warn_if_slow_crc()
        assert not producer.warn_if_slow_crc()  # once per process: every Publisher would repeat it
    assert [r.getMessage() for r in caplog.records] == [producer.SLOW_CRC]
    assert "pip install crc32c" in producer.SLOW_CRC


def test_native_checksums_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ccmon.producer"):
        assert not producer.warn_if_slow_crc()
    assert not caplog.records
