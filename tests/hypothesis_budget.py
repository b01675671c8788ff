"""Hypothesis example budgets, scaled by the loaded profile.

`HYPOTHESIS_PROFILE` picks the profile (conftest loads it):

- `default` (hypothesis's own, 100 examples a test): what `make test` runs, sized to keep the
  whole suite within its time budget (docs/testing.md);
- `thorough`: ten times the examples everywhere, for nightly or manual runs
  (`HYPOTHESIS_PROFILE=thorough make test`).

Tests that set their own `max_examples` take it from `examples(n)`: `n` under `default`,
`10 n` under `thorough`.
"""

from __future__ import annotations

import os

from hypothesis import settings

DEFAULT_MAX_EXAMPLES = 100
settings.register_profile("thorough", max_examples=10 * DEFAULT_MAX_EXAMPLES)


def load_profile() -> None:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def examples(n: int) -> int:
    """`n` examples at the default budget, scaled like the loaded profile's."""
    return max(1, n * settings.default.max_examples // DEFAULT_MAX_EXAMPLES)
