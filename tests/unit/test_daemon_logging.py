"""The daemon's log stays readable: chatty libraries speak at WARNING unless asked for debug."""

from __future__ import annotations

import logging

import pytest

from vocloud.app.daemon import CHATTY_LIBRARIES, quiet_libraries


@pytest.mark.parametrize(("level", "expected"), [("info", logging.WARNING), ("INFO", logging.WARNING),
                                                 ("warning", logging.WARNING), ("debug", logging.NOTSET)])
def test_asyncssh_is_quiet_unless_debug(level: str, expected: int) -> None:
    assert "asyncssh" in CHATTY_LIBRARIES
    logger = logging.getLogger("asyncssh")
    before = logger.level
    logger.setLevel(logging.NOTSET)
    try:
        quiet_libraries(level)
        assert logger.level == expected
    finally:
        logger.setLevel(before)
