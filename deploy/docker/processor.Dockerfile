# thermowatch cloud processor: Kafka -> rules/alerts/aggregates -> search server.
#
# Build from the repository root:
#   docker build -f deploy/docker/processor.Dockerfile -t thermowatch-processor .
# Configure with a TOML file mounted at /etc/thermowatch/processor.toml, or with
# THERMOWATCH_PROCESSOR__<SECTION>__<KEY> environment variables (see
# cloud_processor/sample.toml). Replicas with the same kafka.group_id split the
# partitions between them.
#
# Compose service (for the compose file):
#   processor:
#     build: {context: ../.., dockerfile: deploy/docker/processor.Dockerfile}
#     depends_on: [kafka, search]
#     environment:
#       THERMOWATCH_PROCESSOR__KAFKA__BOOTSTRAP_SERVERS: kafka:9092
#       THERMOWATCH_PROCESSOR__SEARCH__URL: http://search:9200
#       THERMOWATCH_PROCESSOR__WEBHOOK__URL: ""   # optional
#     ports: ["9464:9464"]
#     restart: unless-stopped
#   # Only where the cluster has neither ILM nor ISM (the processor installs a policy where it has one): delete months past retention daily.
#   processor-retention:
#     image: thermowatch-processor
#     environment:
#       THERMOWATCH_PROCESSOR__SEARCH__URL: http://search:9200
#     entrypoint: ["sh", "-c", "while true; do thermowatch processor retention --config /etc/thermowatch/processor.toml; sleep 86400; done"]
#     restart: unless-stopped

FROM python:3.11-slim AS build
WORKDIR /src
# constraints.txt: the dependency versions the test suite passed with.
COPY pyproject.toml constraints.txt ./
COPY telemetry_contract ./telemetry_contract
COPY stagekit ./stagekit
COPY thermowatch ./thermowatch
COPY cloud_processor ./cloud_processor
# Only package metadata reads the README; the image does not need the real one.
RUN printf 'thermowatch cloud processor\n' > README.md \
 && pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt ".[cloud]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    THERMOWATCH_PROCESSOR__HTTP__HOST=0.0.0.0 \
    THERMOWATCH_PROCESSOR__HTTP__PORT=9464
RUN groupadd --system --gid 10001 thermowatch \
 && useradd --system --uid 10001 --gid thermowatch --no-create-home --shell /usr/sbin/nologin thermowatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "thermowatch[cloud]" \
 && rm -rf /wheels
COPY cloud_processor/sample.toml /etc/thermowatch/processor.toml
USER 10001:10001
EXPOSE 9464
# Ready = joined the consumer group and the search server answers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=4 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=2).status == 200 else 1)"]
# SIGTERM: finish the batch in flight, flush windows, commit, leave the group.
STOPSIGNAL SIGTERM
ENTRYPOINT ["thermowatch", "processor"]
CMD ["run", "--config", "/etc/thermowatch/processor.toml"]
