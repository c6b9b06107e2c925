"""gpu-conformance: a conformance suite for Kubernetes clusters with NVIDIA GPUs."""

import warnings
from importlib.metadata import PackageNotFoundError, version

# kr8s warns about every Kubernetes release newer than its own test matrix; that is not the user's problem.
warnings.filterwarnings("ignore", message=r"Kubernetes version .* is not supported", category=UserWarning)

try:
    __version__ = version("gpu-conformance")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
