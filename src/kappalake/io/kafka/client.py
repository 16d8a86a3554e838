"""Translate kappalake's Kafka settings (Spark's ``kafka.*`` names) to librdkafka (confluent-kafka)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_JAAS_USERNAME = re.compile(r"""username\s*=\s*(["'])(.*?)\1""")
_JAAS_PASSWORD = re.compile(r"""password\s*=\s*(["'])(.*?)\1""")
_JAAS_MECHANISM = {
    "PlainLoginModule": "PLAIN",
    "ScramLoginModule": "SCRAM-SHA-512",
}
# What the Python clients (admin, lag, producer) take from the ``kafka.*`` options: how to reach and
# authenticate to the brokers. Everything else there tunes Spark's Java consumer (fetch sizes,
# max.poll.records, receive.buffer.bytes, ...): names librdkafka lacks or reads differently.
_CONNECTION_PREFIXES = ("security.", "sasl.", "ssl.")
_CONNECTION_KEYS = {"client.id"}
# Java client settings that have no librdkafka equivalent and are safe to leave out for Python clients.
_JAVA_ONLY = {"sasl.jaas.config", "ssl.truststore.type", "ssl.keystore.type", "ssl.endpoint.identification.algorithm",
              "isolation.level"}


def librdkafka_config(bootstrap_servers: str, options: Mapping[str, str] | None = None,
                      **extra: Any) -> dict[str, Any]:
    """Client config for confluent-kafka from ``kafka.*`` options as Spark takes them: the connection and
    security settings (``security.*``, ``sasl.*``, ``ssl.*``, ``client.id``); consumer tuning is Spark's."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers}
    for name, value in (options or {}).items():
        if not name.startswith("kafka."):
            continue
        key = name.removeprefix("kafka.")
        if key == "sasl.jaas.config":
            username, password = _JAAS_USERNAME.search(value), _JAAS_PASSWORD.search(value)
            if username and password:
                config["sasl.username"], config["sasl.password"] = username.group(2), password.group(2)
            for module, mechanism in _JAAS_MECHANISM.items():
                if module in value:
                    config.setdefault("sasl.mechanism", mechanism)
            continue
        if key == "ssl.truststore.location" and str(options.get("kafka.ssl.truststore.type", "")).upper() == "PEM":
            config["ssl.ca.location"] = value  # a PEM truststore is librdkafka's CA file
            continue
        if key in _JAVA_ONLY or not (key.startswith(_CONNECTION_PREFIXES) or key in _CONNECTION_KEYS):
            continue
        config[key] = value
    config.update(extra)
    return config
