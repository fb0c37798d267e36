# mtls-gateway: slim Python base, non-root, installed from this source tree, no keys baked in.
# Mount the config at /etc/mtls-gateway/gateway.yaml and the certificates/keys next to it.

# build: a wheel with the request path compiled by mypyc (setup.py); the compiler stays here
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY requirements.txt requirements-dev.txt ./
COPY gateway ./gateway
# mypyc type-checks what it compiles: the locked dependencies and mypy first, then the wheel
RUN pip install --require-hashes --no-deps -r requirements-dev.txt \
 && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements.txt /tmp/requirements.txt
COPY --from=build /wheels /wheels
RUN pip install --require-hashes --no-deps -r /tmp/requirements.txt \
 && pip install --no-deps /wheels/*.whl && rm -rf /wheels /tmp/requirements.txt \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway

WORKDIR /
USER 10001
EXPOSE 8443 9901

# The admin port must listen where the container can reach it (admin.bind: "127.0.0.1:9901" or "0.0.0.0:9901").
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["mtls-gateway"]
CMD ["run", "-c", "/etc/mtls-gateway/gateway.yaml"]
