"""Is the job allowed to do what it will do on an authenticated broker? Checked before the queries start.

A broker with SASL and ACLs (the ``cluster`` target, Confluent Cloud, MSK with IAM/SCRAM) refuses a client in
three ways, each reported here as :class:`KafkaAccessDenied` naming the principal and the topic:

* no credentials (or the wrong protocol): the broker accepts the TCP connection but never answers;
* wrong credentials: SASL authentication fails;
* a principal without the ACL: the topic (or Spark's consumer group) is not authorised.

The principal is the ``username`` of ``kafka.sasl.jaas.config`` (``ANONYMOUS`` without SASL). Passwords are
never part of a message.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence

from kappalake.errors import BrokerUnreachableError
from kappalake.io.kafka.client import librdkafka_config

#: Spark's Kafka source default ``groupIdPrefix``; its groups are ``<prefix>-<uuid>-<hash>[-executor]``.
SPARK_GROUP_PREFIX = "spark-kafka-source"
_USERNAME = re.compile(r"""username\s*=\s*(["'])(.*?)\1""")
_SASL_ERROR = re.compile(r"SASL authentication error: (?P<reason>.*?)(?: \(after \d+ms.*)?$")


class KafkaAccessDenied(BrokerUnreachableError):
    """The broker refused the job's principal (authentication or authorisation)."""


def principal_of(options: Mapping[str, str]) -> str:
    """``User:<name>`` of the SASL JAAS entry, or ``ANONYMOUS`` when the options carry no credentials."""
    match = _USERNAME.search(options.get("kafka.sasl.jaas.config", ""))
    return f"User:{match.group(2)}" if match else "ANONYMOUS"


def uses_sasl(options: Mapping[str, str]) -> bool:
    return options.get("kafka.security.protocol", "PLAINTEXT").upper().startswith("SASL")


def _accepts_connections(servers: str, timeout: float = 3.0) -> bool:
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def explain_silent_broker(servers: str, options: Mapping[str, str], topics: Sequence[str]) -> KafkaAccessDenied | None:
    """A broker that takes TCP connections but did not answer this client: it wants another protocol or
    credentials. None when nothing listens (then the broker is down, not refusing)."""
    if not _accepts_connections(servers):
        return None
    protocol = options.get("kafka.security.protocol", "PLAINTEXT")
    return KafkaAccessDenied(
        f"Kafka at {servers} accepts connections but refused principal {principal_of(options)} "
        f"(security.protocol {protocol}) reading topic {', '.join(repr(t) for t in topics) or '(none)'}: the broker "
        "requires another protocol or credentials; set the target's kafka.options kafka.security.protocol, "
        "kafka.sasl.mechanism and kafka.sasl.jaas.config (the password from the environment)")


def check_access(servers: str, options: Mapping[str, str], read: Sequence[str], write: Sequence[str] = (),
                 group_prefix: str = SPARK_GROUP_PREFIX, timeout: float = 15.0) -> None:
    """Authenticate as the job's principal and check its ACLs: READ on ``read`` topics and on Spark's consumer
    groups (``group_prefix``), WRITE on ``write`` topics. Raise :class:`KafkaAccessDenied` when refused."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient

    principal = principal_of(options)
    topics = ", ".join(repr(t) for t in [*read, *write])
    errors: list[KafkaError] = []
    config = librdkafka_config(servers, options, **{"error_cb": errors.append, "log_level": 0})
    consumer = Consumer({**config, "group.id": f"{group_prefix}-kappalake-access-check", "enable.auto.commit": False})
    try:
        try:
            consumer.list_topics(timeout=timeout)
        except KafkaException:
            consumer.poll(0.5)
            refused = next((e for e in errors if e.code() == KafkaError._AUTHENTICATION), None)
            if refused is not None:
                match = _SASL_ERROR.search(refused.str())
                reason = match["reason"] if match else refused.str()
                raise KafkaAccessDenied(f"Kafka at {servers} refused principal {principal} (authentication "
                                        f"failed: {reason}) before reading topic {topics}; check the user name in "
                                        "kafka.sasl.jaas.config and the password in its environment variable") from None
            silent = explain_silent_broker(servers, options, [*read, *write])
            if silent is not None:
                raise silent from None
            return  # nothing listens: the readiness check reports the broker as unreachable
    finally:
        consumer.close()

    admin = AdminClient(config)
    wanted = {**{t: "READ" for t in read}, **{t: "WRITE" for t in write}}
    futures = admin.describe_topics(TopicCollection(list(wanted)), include_authorized_operations=True,
                                    request_timeout=timeout)
    for topic, future in futures.items():
        try:
            operations = future.result().authorized_operations
            if operations is None:  # a broker that does not report them (before Kafka 2.3): not checked
                continue
            allowed = {op.name for op in operations}
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if getattr(error, "code", lambda: None)() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                allowed = set()
            else:
                continue  # a missing topic is reported by the source check, with its fix
        if wanted[topic] not in allowed:
            verb = "read" if wanted[topic] == "READ" else "write"
            raise KafkaAccessDenied(f"Kafka at {servers} refused principal {principal}: it may not {verb} topic "
                                    f"{topic!r} (no {wanted[topic]} ACL); grant it, e.g. kafka-acls --add "
                                    f"--allow-principal {principal} --operation {wanted[topic]} --topic {topic}")
    if not read:
        return
    group = f"{group_prefix}-kappalake-access-check"
    for future in admin.describe_consumer_groups([group], include_authorized_operations=True,
                                                 request_timeout=timeout).values():
        try:
            operations = future.result().authorized_operations
            if operations is None:
                continue
            allowed = {op.name for op in operations}
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if getattr(error, "code", lambda: None)() != KafkaError.GROUP_AUTHORIZATION_FAILED:
                continue  # not a refusal (a timeout, an older broker): the query reports what it meets
            allowed = set()
        if "READ" not in allowed:
            raise KafkaAccessDenied(f"Kafka at {servers} refused principal {principal}: it may not use consumer "
                                    f"groups '{group_prefix}-*' (Spark's Kafka source) to read topic {topics}; "
                                    f"grant READ on the group prefix, e.g. kafka-acls --add --allow-principal "
                                    f"{principal} --operation READ --group {group_prefix}- "
                                    "--resource-pattern-type prefixed")


_TOPIC_REFUSED = re.compile(r"TopicAuthorizationException: Not authorized to access topics: \[(?P<topics>[^\]]*)\]")
_GROUP_REFUSED = re.compile(r"GroupAuthorizationException: Not authorized to access group: (?P<group>\S+)")
_AUTH_REFUSED = re.compile(r"SaslAuthenticationException: (?P<reason>[^\n]*)")


def explain_refusal(text: str, options: Mapping[str, str]) -> str | None:
    """A clear message when a query's failure ``text`` (Spark's Java Kafka client) says the broker refused
    the principal mid-run (an ACL or the user removed); None otherwise."""
    principal = principal_of(options)
    if match := _TOPIC_REFUSED.search(text):
        return (f"the Kafka broker refused principal {principal} access to topic(s) {match['topics']} "
                "(TopicAuthorizationException): grant it READ on its source topics and WRITE on its dead-letter topic")
    if match := _GROUP_REFUSED.search(text):
        return (f"the Kafka broker refused principal {principal} the consumer group {match['group']} "
                "(GroupAuthorizationException): grant it READ on the group prefix of Spark's Kafka source")
    if match := _AUTH_REFUSED.search(text):
        return f"the Kafka broker refused principal {principal}: {match['reason'][:300]}"
    return None
