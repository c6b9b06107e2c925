"""Suite-wide set-up for the checks in this directory."""

import pytest

from gpu_conformance.stack import StackFacts


@pytest.fixture(scope="session", autouse=True)
def _stack_at_run_start(gpu_stack_at_start: StackFacts) -> None:
    """Look at the GPU stack before the first check, so stack checks can tell what restarted during the run."""
