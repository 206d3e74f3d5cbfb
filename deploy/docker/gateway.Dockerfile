# thermowatch gateway: MQTT -> Kafka bridge.
#
# Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t thermowatch-gateway .
# Configure with a TOML file mounted at /etc/thermowatch/gateway.toml, or with
# THERMOWATCH_GATEWAY__<SECTION>__<KEY> environment variables (see gateway/sample.toml).
# Give every replica a stable THERMOWATCH_GATEWAY__GATEWAY__ID: it names the MQTT
# persistent session the replica resumes after a restart.

FROM python:3.11-slim AS build
WORKDIR /src
# constraints.txt: the dependency versions the test suite passed with.
COPY pyproject.toml constraints.txt ./
COPY telemetry_contract ./telemetry_contract
COPY stagekit ./stagekit
COPY thermowatch ./thermowatch
COPY gateway ./gateway
# Only package metadata reads the README; the image does not need the real one.
RUN printf 'thermowatch gateway\n' > README.md \
 && pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt ".[gateway]" "cramjam>=2.8,<3"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    THERMOWATCH_GATEWAY__HTTP__HOST=0.0.0.0 \
    THERMOWATCH_GATEWAY__HTTP__PORT=9108
RUN groupadd --system --gid 10001 thermowatch \
 && useradd --system --uid 10001 --gid thermowatch --no-create-home --shell /usr/sbin/nologin thermowatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "thermowatch[gateway]" cramjam \
 && rm -rf /wheels
COPY gateway/sample.toml /etc/thermowatch/gateway.toml
USER 10001:10001
EXPOSE 9108
# Healthy = ready: connected to both MQTT and Kafka, and Kafka not stalled.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/readyz', timeout=2).status == 200 else 1)"]
# SIGTERM: finish in-flight Kafka writes (gateway.shutdown_grace_s), ack, disconnect.
STOPSIGNAL SIGTERM
ENTRYPOINT ["thermowatch", "gateway"]
CMD ["run", "--config", "/etc/thermowatch/gateway.toml"]
