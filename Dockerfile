# syntax=docker/dockerfile:1
# One image for every role: costctl api | worker | dashboard | agent | db upgrade.
# Build: docker build -t registry.example.com/costctl:0.1.0 .
# tests/deploy/test_image.py replays the builder stage's COPY lines and `pip wheel` command
# (without dependencies, offline) and checks the wheel holds the package data roles need.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY billing billing
COPY scheduler scheduler
COPY dashboard dashboard
COPY costctl costctl
# The costctl wheel and the wheels of all its dependencies, for an offline install below.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 costctl \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/costctl --create-home \
      --shell /usr/sbin/nologin costctl
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels costctl
USER 10001:10001
WORKDIR /home/costctl
# api, dashboard, agent health
EXPOSE 8000 8050 8081
ENTRYPOINT ["costctl"]
CMD ["--help"]
