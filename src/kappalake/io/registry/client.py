"""The Schema Registry as a job sees it: writer schemas by id, cached on disk next to the checkpoint.

A schema id names one immutable schema, so a cached schema never goes stale: a job that restarts while
the registry is down decodes every id it has seen before from its cache. The registry client is
confluent-kafka's own ``SchemaRegistryClient``; credentials come from the environment variables the
target names, never from YAML, and never appear in messages.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kappalake.config.formats import SchemaRegistryConfig
from kappalake.errors import ConfigError, KappalakeError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
LOCAL_STACK = "local-stack"


class RegistryUnavailable(KappalakeError):
    """The registry did not answer (connection refused, timeout, 5xx)."""


class SchemaNotFound(KappalakeError):
    """The registry answered that it has no such schema id, subject or version."""


@dataclass(frozen=True)
class WriterSchema:
    """One registered schema: its id, type (AVRO, PROTOBUF, JSON), text and, when known, subject/version."""

    id: int
    schema_type: str
    text: str
    subject: str | None = None
    version: int | None = None

    @property
    def label(self) -> str:
        """``subject vN`` for messages, or ``id N`` when the subject is not known."""
        return f"{self.subject} v{self.version}" if self.subject and self.version else f"id {self.id}"


def client_conf(config: SchemaRegistryConfig, url: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``SchemaRegistryClient`` settings; ConfigError naming the variable when a credential is not set."""
    env = dict(os.environ) if env is None else env
    conf: dict[str, Any] = {"url": url, "timeout": config.timeout_seconds, "max.retries": 1,
                            "retries.wait.ms": 200, "retries.max.wait.ms": 1000}
    for name, key in (("basic_auth_env", "basic.auth.user.info"), ("bearer_token_env", "bearer.auth.token")):
        variable = getattr(config, name)
        if variable:
            if not env.get(variable):
                raise ConfigError(f"schema_registry.{name}: environment variable {variable} is not set")
            conf[key] = env[variable]
    if "bearer.auth.token" in conf:
        conf.update({"bearer.auth.credentials.source": "STATIC_TOKEN", "bearer.auth.logical.cluster": ""})
    for name, key in (("ca_location", "ssl.ca.location"), ("certificate_location", "ssl.certificate.location"),
                      ("key_location", "ssl.key.location")):
        if getattr(config, name):
            conf[key] = getattr(config, name)
    return conf


#: Registry error codes that answer "no such subject / version / schema".
NOT_FOUND_CODES = (40401, 40402, 40403)


def _unavailable(exc: Exception) -> bool:
    """A transport failure, a server error, or a 404 without a registry error code (a wrong URL path answers
    404 for everything: that must pause the job, not dead-letter every record) -- not an answer about the
    schema."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code != 404 or exc.error_code not in NOT_FOUND_CODES
    return True


class RegistrySchemas:
    """Writer schemas by id: the disk cache first, then the registry (whose answers are cached)."""

    def __init__(self, spark: SparkSession, cache_dir: str, config: SchemaRegistryConfig | None,
                 url: str | None) -> None:
        self.spark = spark
        self.cache_dir = cache_dir.rstrip("/")
        self.config = config
        self.url = url
        self._client: Any = None
        self._memory: dict[int, WriterSchema] = {}

    def _registry(self) -> Any:
        if self.config is None or self.url is None:
            raise RegistryUnavailable("no schema_registry is configured for this target")
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._client = SchemaRegistryClient(client_conf(self.config, self.url))
        return self._client

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # the client raises httpx, SchemaRegistryError and others
            if _unavailable(exc):
                raise RegistryUnavailable(f"schema registry {self.url} unreachable ({what}): "
                                          f"{type(exc).__name__}: {exc}") from None
            raise SchemaNotFound(f"schema registry {self.url}: {what}: {exc}") from None

    def cached(self) -> dict[int, WriterSchema]:
        """Every schema in the disk cache."""
        from kappalake.io.hadoopfs import list_names, read_text

        for name in list_names(self.spark, self.cache_dir):
            if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) not in self._memory:
                text = read_text(self.spark, f"{self.cache_dir}/{name}")
                if text:
                    schema = WriterSchema(**json.loads(text))
                    self._memory[schema.id] = schema
        return dict(self._memory)

    def _remember(self, schema: WriterSchema) -> WriterSchema:
        from kappalake.io.hadoopfs import write_text

        known = self._memory.get(schema.id)
        if known is None or (schema.subject and not known.subject):
            write_text(self.spark, f"{self.cache_dir}/{schema.id}.json", json.dumps(asdict(schema)))
            self._memory[schema.id] = schema
        return self._memory[schema.id]

    def get(self, schema_id: int) -> WriterSchema:
        """The schema with ``schema_id``: RegistryUnavailable or SchemaNotFound when not cached and the
        registry cannot give it."""
        if schema_id in self._memory or schema_id in self.cached():
            return self._memory[schema_id]
        found = self._call(f"schema id {schema_id}", self._registry().get_schema, schema_id)
        subject, version = None, None
        try:  # the subject and version it was registered under, for messages (best effort)
            pairs = self._call(f"versions of schema id {schema_id}", self._registry().get_schema_versions, schema_id)
            if pairs:
                subject, version = pairs[0].subject, pairs[0].version
        except SchemaNotFound:
            pass
        return self._remember(WriterSchema(schema_id, found.schema_type or "AVRO", found.schema_str, subject, version))

    def subject_versions(self, subject: str) -> list[WriterSchema]:
        """Every registered version of ``subject`` (cached as they arrive); [] for an unknown subject."""
        registry = self._registry()
        try:
            versions = self._call(f"versions of subject {subject!r}", registry.get_versions, subject)
        except SchemaNotFound:
            return []
        found = []
        for version in versions:
            registered = self._call(f"subject {subject!r} version {version}", registry.get_version, subject, version)
            found.append(self._remember(WriterSchema(registered.schema_id, registered.schema.schema_type or "AVRO",
                                                     registered.schema.schema_str, subject, registered.version)))
        return found
