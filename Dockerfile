# mtls-gateway: slim Python base, non-root, installed from this source tree, no keys baked in.
# Mount the config at /etc/mtls-gateway/gateway.yaml and the certificates/keys next to it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install . && rm -rf /src \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway

WORKDIR /
USER 10001
EXPOSE 8443 9901

# The admin port must listen where the container can reach it (admin.bind: "127.0.0.1:9901" or "0.0.0.0:9901").
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["mtls-gateway"]
CMD ["run", "-c", "/etc/mtls-gateway/gateway.yaml"]
