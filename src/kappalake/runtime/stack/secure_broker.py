"""The authenticated broker of the ``cluster`` profile: the local Kafka broker with a SASL_SSL listener.

What a production cluster asks of a client, on one node:

* TLS: a CA and a broker certificate (``127.0.0.1``/``localhost``) generated with ``openssl`` at the first
  start under ``$KAPPALAKE_HOME/stack/kafka-tls``; clients trust ``ca.pem`` (``kafka.ssl.truststore.type:
  PEM``). The broker's private key is never encrypted with a password and is readable by its owner only.
* SCRAM-SHA-512 on the client listener. The admin (``admin``, a super user, also the inter-broker
  principal) is created when the storage is formatted; the pipeline's principal (``$KAPPALAKE_KAFKA_USER``,
  default ``kappalake``) is created or updated by the admin at every ``up``.
* ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: a principal may do only what an ACL
  grants. The pipeline principal gets READ on its source topics, READ on consumer groups prefixed
  ``spark-kafka-source-`` (Spark's Kafka source names its groups so) and WRITE on its dead-letter topics.
  Nothing else: it cannot create topics or produce to the source topics.
* The controller listener (127.0.0.1 only) takes SASL_PLAINTEXT/PLAIN for the admin, so no anonymous
  principal has super-user rights.

Passwords come from the environment only (``$KAPPALAKE_KAFKA_ADMIN_PASSWORD``, ``$KAPPALAKE_KAFKA_PASSWORD``).
The broker reads them through Kafka's ``EnvVarConfigProvider`` (``${env:NAME}`` in ``server.properties``), so
they are in no file under the data dir, nor in the state file or ``kappalake stack status``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kappalake.errors import StackError
from kappalake.io.kafka.admin import TopicSpec
from kappalake.io.kafka.client import librdkafka_config
from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.broker import LocalStack, _server_properties

ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV = "KAPPALAKE_KAFKA_ADMIN_PASSWORD"
USER_ENV = "KAPPALAKE_KAFKA_USER"
PASSWORD_ENV = "KAPPALAKE_KAFKA_PASSWORD"
DEFAULT_USER = "kappalake"
MECHANISM = "SCRAM-SHA-512"
#: Spark's Kafka source names its consumer groups ``spark-kafka-source-<uuid>-<hash>[-executor]``.
SPARK_GROUP_PREFIX = "spark-kafka-source-"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_SECURITY = "SASL_SSL"


def _secret(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise StackError(f"the cluster profile's Kafka broker needs ${name} (a password; secrets come from the "
                         "environment only): export it before 'kappalake stack up --profile cluster'")
    if any(ch in value for ch in "\"\\\n"):
        raise StackError(f"${name} must not contain quotes, backslashes or newlines (it goes into a JAAS entry)")
    return value


def pipeline_user(env: Mapping[str, str] | None = None) -> str:
    """The pipeline's principal name (``$KAPPALAKE_KAFKA_USER``, default ``kappalake``)."""
    env = os.environ if env is None else env
    return env.get(USER_ENV) or DEFAULT_USER


def jaas(username: str, password: str) -> str:
    """A SCRAM client JAAS entry (the value of ``kafka.sasl.jaas.config``)."""
    return f'{SCRAM_MODULE} required username="{username}" password="{password}";'


def client_options(ca_file: Path, username: str, password: str) -> dict[str, str]:
    """``kafka.*`` options of a client of this broker (Spark's Java client; translated for confluent-kafka)."""
    return {
        "kafka.security.protocol": _SECURITY,
        "kafka.sasl.mechanism": MECHANISM,
        "kafka.sasl.jaas.config": jaas(username, password),
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": str(ca_file),
    }


def generate_tls(directory: Path) -> None:
    """A CA and a broker certificate for 127.0.0.1/localhost signed by it (kept across restarts)."""
    if all((directory / name).exists() for name in ("ca.pem", "broker.pem")):
        return
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)

    def openssl(*args: str) -> None:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=directory, timeout=120)
        if result.returncode != 0:
            raise StackError(f"openssl {args[0]} failed generating the broker's certificates in {directory}: "
                             f"{(result.stderr or result.stdout).strip()[-400:]}")

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
            "-subj", "/CN=kappalake local CA")
    extensions = directory / "broker.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
            "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.crt", "-days", "3650", "-extfile", str(extensions))
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8")
    # Kafka's PEM key store: the private key and the certificate chain in one file.
    keystore = directory / "broker.pem"
    keystore.write_text((directory / "broker.pk8").read_text() + (directory / "broker.crt").read_text()
                        + (directory / "ca.pem").read_text())
    for name in ("ca.key", "broker.key", "broker.pk8", "broker.pem"):
        os.chmod(directory / name, 0o600)
    for name in ("broker.csr", "broker.key", "broker.pk8", "broker.ext"):
        (directory / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class Grant:
    """ACLs the pipeline principal gets: topics it reads, topics it writes (dead letters)."""

    read: tuple[str, ...]
    write: tuple[str, ...]


class SecureBroker(LocalStack):
    """The local Kafka broker with only a SASL_SSL client listener, SCRAM users and ACLs."""

    security = _SECURITY

    def __init__(self, layout: HomeLayout | None = None, env: Mapping[str, str] | None = None) -> None:
        super().__init__(layout)
        self.env = os.environ if env is None else env
        self.data_dir = self.dir / "kafka-data-sasl"
        self.tls_dir = self.dir / "kafka-tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    # ------------------------------------------------------------------ hooks of LocalStack
    def admin_options(self) -> dict[str, str]:
        return client_options(self.ca_file, ADMIN_USER, _secret(self.env, ADMIN_PASSWORD_ENV))

    def prepare(self) -> None:
        _secret(self.env, ADMIN_PASSWORD_ENV)
        _secret(self.env, PASSWORD_ENV)
        generate_tls(self.tls_dir)

    def format_arguments(self) -> list[str]:
        password = _secret(self.env, ADMIN_PASSWORD_ENV)
        return ["--add-scram", f"{MECHANISM}=[name={ADMIN_USER},password={password}]"]

    def server_properties(self, port: int, controller_port: int) -> str:
        base = _server_properties(self.data_dir, port, controller_port)
        settings = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in base.splitlines() if "=" in line}
        admin = "${env:" + ADMIN_PASSWORD_ENV + "}"
        settings.update({
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": MECHANISM,
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                f'{SCRAM_MODULE} required username="{ADMIN_USER}" password="{admin}";',
            "listener.name.controller.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{ADMIN_USER}" password="{admin}" user_{ADMIN_USER}="{admin}";',
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls_dir / "broker.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.client.auth": "none",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
            "config.providers": "env",
            "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
        })
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    # ------------------------------------------------------------------ lifecycle
    def up(self, topics: list[TopicSpec] | None = None, timeout: float = 120.0,  # type: ignore[override]
           grant: Grant | None = None) -> object:
        """Start (or find) the broker, create ``topics``, create or update the pipeline principal and its ACLs."""
        status = super().up(topics, timeout)
        self.authorize(grant or Grant(tuple(t.name for t in topics or ()), ()))
        return status

    def authorize(self, grant: Grant) -> None:
        """Upsert the pipeline principal's SCRAM credential; grant it exactly ``grant`` (idempotent)."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            AdminClient,
            ResourcePatternType,
            ResourceType,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        user = pipeline_user(self.env)
        admin = AdminClient(librdkafka_config(self.bootstrap_servers(), self.admin_options()))
        upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                              _secret(self.env, PASSWORD_ENV).encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            _result(future, f"creating the SCRAM user {user!r}")
        principal = f"User:{user}"

        def acl(kind: ResourceType, name: str, pattern: ResourcePatternType, op: AclOperation) -> AclBinding:
            return AclBinding(kind, name, pattern, principal, "*", op, AclPermissionType.ALLOW)

        bindings = [acl(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, AclOperation.READ) for t in grant.read]
        bindings += [acl(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, AclOperation.WRITE) for t in grant.write]
        bindings.append(acl(ResourceType.GROUP, SPARK_GROUP_PREFIX, ResourcePatternType.PREFIXED, AclOperation.READ))
        for future in admin.create_acls(bindings).values():
            _result(future, f"granting ACLs to {principal}")

    def acls(self) -> list[str]:
        """Every ACL on the broker, as ``principal operation resource:name`` lines (for checks and the README)."""
        from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, AdminClient
        from confluent_kafka.admin import ResourcePatternType, ResourceType

        admin = AdminClient(librdkafka_config(self.bootstrap_servers(), self.admin_options()))
        every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                 AclPermissionType.ANY)
        found = _result(admin.describe_acls(every), "listing ACLs")
        return sorted(f"{b.principal} {b.operation.name} {b.restype.name.lower()}:{b.name}"
                      f"{'*' if b.resource_pattern_type.name == 'PREFIXED' else ''}" for b in found)


def _result(future, what: str):  # type: ignore[no-untyped-def]
    from confluent_kafka import KafkaException

    try:
        return future.result(timeout=30)
    except KafkaException as exc:
        raise StackError(f"{what} on the local SASL_SSL broker failed: {exc}") from None


def grant_for(pipelines: Iterable[object]) -> Grant:
    """What the pipelines of a project need: READ on their source topics, WRITE on their dead-letter topics."""
    read: list[str] = []
    write: list[str] = []
    for pipeline in pipelines:
        read += list(pipeline.source.topics)  # type: ignore[attr-defined]
        read += control_topics(pipeline)
        dlq = pipeline.dead_letter.kafka_topic  # type: ignore[attr-defined]
        if dlq:
            write.append(dlq)
    return Grant(tuple(dict.fromkeys(read)), tuple(dict.fromkeys(write)))


def control_topics(pipeline: object) -> list[str]:
    """Erasure requests of a live job (``<pipeline>.forget``, ``erasure.control_topic``): read, created by the
    stack since the pipeline's principal may not create topics."""
    erasure = getattr(pipeline, "erasure", None)
    if erasure is not None and getattr(erasure, "enabled", False) and getattr(erasure, "control_topic", False):
        return [f"{pipeline.name}.forget"]  # type: ignore[attr-defined]
    return []
