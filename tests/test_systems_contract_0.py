"""Contract tests, shard 0 of 2 (see `tests/contract_cases.py`)."""

from .contract_cases import *  # noqa: F403  (the contract's tests and its `name` parametrization)

SHARD = 0
