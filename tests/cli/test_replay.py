"""Section 2 of issue #9, replayed through the real command (see tests/cli/replay.py)."""

import pytest

from tests.cli.replay import CASES, run_case


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_new_user_case_stays_fixed(name):
    run_case(name)
