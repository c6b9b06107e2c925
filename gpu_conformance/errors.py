"""Exit codes and the error types that map onto them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes of `gpu-conformance`."""

    PASSED = 0
    CONFORMANCE_FAILURE = 1
    USAGE = 2
    INFRASTRUCTURE = 3


class GpuConformanceError(Exception):
    """Base class: an error with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.INFRASTRUCTURE


class ConfigError(GpuConformanceError):
    """Bad input from the user: kubeconfig, profile, scenario, arguments."""

    exit_code = ExitCode.USAGE


class ClusterUnreachable(GpuConformanceError):
    """The cluster could not be reached or refused our credentials."""

    exit_code = ExitCode.INFRASTRUCTURE


class SimError(GpuConformanceError):
    """The simulated cluster could not be built, started or stopped."""

    exit_code = ExitCode.INFRASTRUCTURE
