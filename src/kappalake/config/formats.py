"""Record formats of a pipeline's events (``events.format``) and the Schema Registry of a target.

JSON needs nothing more. Avro and Protobuf records are in the Confluent wire format by default (magic byte
0, the 4-byte big-endian schema id, then the payload) and need the target's ``schema_registry``; ``wire:
plain`` reads records without the header, with the writer schema from a file. Schema files are resolved
against the conf directory when the pipeline loads.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from kappalake.config.base import StrictModel

Wire = Literal["confluent", "plain"]
SubjectStrategy = Literal["topic_name", "record_name", "topic_record_name"]
_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class AvroFormat(StrictModel):
    """Avro payloads, read with ``schema`` as the reader schema (Avro schema resolution)."""

    schema_file: str = Field(alias="schema", description="Reader schema (.avsc), relative to the conf directory.")
    wire: Wire = "confluent"
    writer_schema: str | None = Field(
        default=None, description="wire: plain only: the writer schema (.avsc); default the reader schema.")

    @model_validator(mode="after")
    def _writer_only_for_plain(self) -> AvroFormat:
        if self.writer_schema is not None and self.wire != "plain":
            raise ValueError("writer_schema: only for wire: plain (in the Confluent wire format every record "
                             "names its writer schema by id)")
        return self


class ProtobufFormat(StrictModel):
    """Protobuf payloads, parsed as ``message`` from a descriptor set (``protoc --include_imports
    --descriptor_set_out``)."""

    descriptor: str = Field(description="Binary FileDescriptorSet, relative to the conf directory.")
    message: str = Field(pattern=r"^[A-Za-z_][\w.]*$", description="Fully qualified message name.")
    wire: Wire = "confluent"


class SchemaRegistryConfig(StrictModel):
    """A Confluent-compatible Schema Registry (Confluent, Apicurio's ccompat API, Karapace). Credentials
    come from environment variables named here, never from YAML."""

    url: str = Field(description="Registry URL; 'local-stack' = the endpoint of 'kappalake stack up'.")
    basic_auth_env: str | None = Field(default=None, pattern=_ENV_NAME,
                                       description="Environment variable holding 'user:password'.")
    bearer_token_env: str | None = Field(default=None, pattern=_ENV_NAME,
                                         description="Environment variable holding a bearer token.")
    ca_location: str | None = Field(default=None, description="CA bundle for a TLS registry.")
    certificate_location: str | None = Field(default=None, description="Client certificate (mTLS).")
    key_location: str | None = Field(default=None, description="Client key (mTLS).")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout.")
    retry_seconds: float = Field(default=5.0, gt=0, description="Pause between attempts while it is unreachable.")

    @model_validator(mode="after")
    def _one_auth(self) -> SchemaRegistryConfig:
        if self.basic_auth_env and self.bearer_token_env:
            raise ValueError("basic_auth_env and bearer_token_env: choose one")
        if re.match(r"^https?://[^/@]*:[^/@]*@", self.url):
            raise ValueError("url: credentials in the URL would land in logs; use basic_auth_env")
        return self


def subject_for(strategy: SubjectStrategy, topic: str, record_name: str) -> str:
    """The registry subject of a topic's values under a subject naming strategy."""
    if strategy == "topic_name":
        return f"{topic}-value"
    if strategy == "record_name":
        return record_name
    return f"{topic}-{record_name}"
