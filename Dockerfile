# syntax=docker/dockerfile:1
# sipfleet's container image: the wheel with the compiled core (mypyc), built in
# a first stage that has a C compiler, installed into a slim Python without one.
#
#   docker build -t sipfleet .
#   docker run -d --name sipfleet --network host --stop-timeout 630 \
#     -v /etc/sipfleet:/etc/sipfleet:ro -v sipfleet-data:/var/lib/sipfleet sipfleet
#
# SIGTERM starts the graceful stop (new calls get 503, calls in progress finish
# within [proxy] shutdown_timeout, 600 s by default): give `docker stop` that
# long (--stop-timeout / -t). The health check asks the control HTTP server
# (127.0.0.1:9060 in the container) whether the node takes calls.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY sipfleet ./sipfleet
# The image must not ship the slow core silently: fail the build instead.
ENV SIPFLEET_REQUIRE_COMPILED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && ls /wheels/sipfleet-*-linux_*.whl

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="sipfleet" \
      org.opencontainers.image.description="SIP edge load balancer and control plane" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 sipfleet \
 && useradd --system --uid 10001 --gid sipfleet --home-dir /var/lib/sipfleet \
      --no-create-home --shell /usr/sbin/nologin sipfleet \
 && mkdir -p /etc/sipfleet /var/lib/sipfleet /run/sipfleet \
 && chown sipfleet:sipfleet /var/lib/sipfleet /run/sipfleet
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels sipfleet \
 && rm -rf /tmp/wheels \
 && sipfleet --version \
 && sipfleet --version | grep -q "core: compiled"
COPY deploy/docker/sipfleet.toml /etc/sipfleet/sipfleet.toml
ENV PYTHONUNBUFFERED=1 \
    SIPFLEET_RUN_DIR=/run/sipfleet
WORKDIR /var/lib/sipfleet
VOLUME ["/etc/sipfleet", "/var/lib/sipfleet"]
EXPOSE 5060/udp 5060/tcp
USER sipfleet:sipfleet
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["sipfleet", "health", "--url", "http://127.0.0.1:9060/RPC"]
ENTRYPOINT ["sipfleet", "run"]
CMD ["-c", "/etc/sipfleet/sipfleet.toml"]
