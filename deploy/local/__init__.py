"""The real local stack run as plain processes: Mosquitto, Kafka (KRaft) and OpenSearch.

See ``deploy/local/README.md``; the API lives in :mod:`deploy.local.stack`.
"""
