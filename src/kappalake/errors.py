"""Exceptions with messages meant for the person running kappalake.

Every error raised for bad input names what was wrong and where; the CLI prints
the message (no traceback) and exits non-zero.
"""

from __future__ import annotations


class KappalakeError(Exception):
    """Base class: the message is complete and user-facing."""

    exit_code = 1


class ConfigError(KappalakeError):
    """A configuration file is missing, unreadable or invalid."""

    exit_code = 2


class DependencyError(KappalakeError):
    """A runtime dependency (Java, Maven, JVM jars) is missing or failed to resolve."""

    exit_code = 3


class StackError(KappalakeError):
    """The embedded local stack (Kafka broker process) could not be started, reached or stopped."""

    exit_code = 4


class BrokerUnreachableError(KappalakeError):
    """The configured Kafka bootstrap servers did not answer."""

    exit_code = 5


class ClickHouseUnavailable(KappalakeError):
    """ClickHouse (server or the local chDB directory) could not be reached or kept failing."""

    exit_code = 6


class SchemaConflict(KappalakeError):
    """A table kappalake owns exists with a layout the configuration cannot be migrated to."""

    exit_code = 7


class MaintenanceRefused(KappalakeError):
    """Maintenance that would be unsafe now: another maintenance run holds the pipeline, or a retention is
    shorter than the pipeline's safety margin."""

    exit_code = 8


class CdcSourceError(KappalakeError):
    """The CDC source database (PostgreSQL) could not be reached, lacks the CDC schema, or failed mid-run."""

    exit_code = 9
