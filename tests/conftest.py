"""Shared pytest helpers."""

from __future__ import annotations

import os

import pytest


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip the calling test with `reason` unless `condition` holds; with the environment
    variable REQUIRE_SYSTEM_DEPS=1 (CI images that install every system dependency) fail
    instead, so a missing dependency cannot pass silently as a skip."""
    if condition:
        return
    if os.environ.get("REQUIRE_SYSTEM_DEPS") == "1":
        pytest.fail(f"REQUIRE_SYSTEM_DEPS=1 but {reason}")
    pytest.skip(reason)
