"""The local data directory (``KAPPALAKE_HOME``) and where things live inside it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def kappalake_home(env: Mapping[str, str] | None = None) -> Path:
    """``$KAPPALAKE_HOME`` or ``./.kappalake``, absolute."""
    env = os.environ if env is None else env
    return Path(env.get("KAPPALAKE_HOME") or ".kappalake").resolve()


@dataclass(frozen=True)
class HomeLayout:
    """Paths under the data directory.

    ``cache`` holds what the setup step downloads (JVM jars, Ivy cache) and can be shared between
    data directories with ``$KAPPALAKE_CACHE`` (tests use a fresh home per run but one cache).
    """

    home: Path
    cache: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HomeLayout:
        env = os.environ if env is None else env
        home = kappalake_home(env)
        cache = Path(env.get("KAPPALAKE_CACHE") or home / "cache").resolve()
        return cls(home=home, cache=cache)

    @property
    def broker_jars(self) -> Path:
        return self.cache / "jars" / "kafka-broker"

    @property
    def ivy(self) -> Path:
        return self.cache / "ivy"

    def spark_jars_manifest(self, line: str) -> Path:
        """The resolved connector jars of Spark line ``line`` (one manifest per line: lines share the Ivy cache)."""
        return self.cache / "jars" / f"spark-{line}-jars.json"

    @property
    def stack(self) -> Path:
        return self.home / "stack"

    @property
    def runs(self) -> Path:
        return self.home / "runs"
