# skybatch worker image (CPU): the scheduler and workers of the `kubernetes` profile run it.
#   docker build -t REGISTRY/skybatch:$(skybatch --version) .
#   docker build --build-arg EXTRAS=kubernetes -t ...   # also the operator client, for a driver pod
# The image's skybatch must be the driver's version: workers that differ are named and refused
# before any work starts (skybatch.cluster_check). GPU: Dockerfile.cuda.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY skybatch ./skybatch
COPY flows ./flows
COPY cluster ./cluster
COPY schemas ./schemas
RUN python -m venv /opt/skybatch \
 && /opt/skybatch/bin/pip install --upgrade pip \
 && /opt/skybatch/bin/pip install ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/skybatch/bin/pip check

FROM python:${PYTHON_VERSION}-slim
COPY --from=build /opt/skybatch /opt/skybatch
ENV PATH=/opt/skybatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg
RUN useradd --create-home --uid 1000 skybatch
USER 1000
WORKDIR /home/skybatch
# The operator passes its own args (dask-worker ... / dask-scheduler ...); this is the default.
CMD ["dask", "worker", "--help"]
