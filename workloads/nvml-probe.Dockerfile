# The NVML probe image: `docker build -f workloads/nvml-probe.Dockerfile -t REGISTRY/nvml-probe:0.1.0 .`
# from the repository root. The NVIDIA container toolkit injects libnvidia-ml at run time.
FROM python:3.12-slim-bookworm
RUN pip install --no-cache-dir nvidia-ml-py==13.610.43
COPY gpu_conformance/__init__.py gpu_conformance/probe.py /opt/gc/gpu_conformance/
ENV PYTHONPATH=/opt/gc NVIDIA_DRIVER_CAPABILITIES=utility
ENTRYPOINT ["python3", "-m", "gpu_conformance.probe"]
