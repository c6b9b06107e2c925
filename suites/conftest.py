"""Suite-wide set-up for the checks in this directory."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _stack_at_run_start(request: pytest.FixtureRequest) -> None:
    """Look at the GPU stack before the first check, so stack checks can tell what restarted during the run.

    Only the stack checks need it: if the look fails (say, listing DaemonSets is forbidden), they
    report the error when they ask for it; every other check runs on.
    """
    try:
        request.getfixturevalue("gpu_stack_at_start")
    except Exception:  # noqa: BLE001 - re-raised by pytest's fixture cache for the stack checks
        pass
