"""Resolve the Kafka Connect worker and the Debezium Postgres connector jars (``stack up --with cdc``).

Same mechanism and cache as the broker jars (:mod:`kappalake.runtime.jars`): ``mvn
dependency:copy-dependencies`` from a generated POM into ``<cache>/jars/<name>``, with a ``manifest.json``
listing the wanted artifacts and the jars, so a second ``up`` needs no network.

* ``kafka-connect``: the worker's classpath (``connect-runtime``, ``connect-json``, ``connect-file`` and a
  log4j2 binding for slf4j).
* ``debezium-postgres``: the Debezium plugin directory (``plugin.path``), without the jars the worker
  provides itself (``connect-*``, ``kafka-clients``, ``slf4j``): two copies of those break class loading.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from kappalake import versions
from kappalake.errors import DependencyError
from kappalake.runtime.jars import _DEPENDENCY, _manifest_ok, _maven_settings, explain_maven_failure
from kappalake.runtime.paths import HomeLayout

#: Jars the worker provides: never copied into the plugin directory.
PLUGIN_EXCLUDED = re.compile(r"^(connect-.*|kafka-clients-.*|slf4j-.*)\.jar$")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.kappalake</groupId>
  <artifactId>kappalake-{name}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
{management}  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_BOM = """  <dependencyManagement>
    <dependencies>
      <dependency><groupId>io.debezium</groupId><artifactId>debezium-bom</artifactId><version>{v}</version>
        <type>pom</type><scope>import</scope></dependency>
    </dependencies>
  </dependencyManagement>
"""


def connect_jars_dir(layout: HomeLayout) -> Path:
    """The Kafka Connect worker's classpath directory."""
    return layout.cache / "jars" / "kafka-connect"


def debezium_plugin_dir(layout: HomeLayout) -> Path:
    """The Debezium Postgres connector's plugin directory; its parent is the worker's ``plugin.path``."""
    return layout.cache / "jars" / "connect-plugins" / "debezium-postgres"


def maven_pom(name: str, artifacts: tuple[str, ...], bom: str | None = None) -> str:
    """A POM whose runtime dependencies are ``artifacts`` (``group:artifact:version``), importing
    ``debezium-bom`` ``bom`` when given."""
    deps = []
    for coordinate in artifacts:
        group, artifact, version = coordinate.split(":")
        deps.append(_DEPENDENCY.format(g=group, a=artifact, v=version))
    return _POM.format(name=name, management=_BOM.format(v=bom) if bom else "", dependencies="\n".join(deps))


def plugin_jars(jars: list[str]) -> list[str]:
    """``jars`` without those the worker provides (connect-*, kafka-clients, slf4j)."""
    return [j for j in jars if not PLUGIN_EXCLUDED.match(Path(j).name)]


def _resolve(layout: HomeLayout, what: str, target: Path, artifacts: tuple[str, ...], bom: str | None,
             plugin: bool = False) -> list[str]:
    """Copy ``artifacts`` and their runtime dependencies into ``target`` with Maven (once); the jar paths."""
    existing = _manifest_ok(target / "manifest.json", "artifacts", list(artifacts))
    if existing:
        return existing
    mvn = shutil.which("mvn")
    if not mvn:
        raise DependencyError(f"Maven ('mvn') is needed once to fetch the {what} jars from Maven Central; "
                              "install it with: sudo apt-get install -y maven")
    work = layout.cache / f"maven-{target.name}"
    shutil.rmtree(target, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(maven_pom(target.name, artifacts, bom))
    command = [mvn, "-B", "-q", "-s", str(_maven_settings()), "-f", str(work / "pom.xml"),
               "dependency:copy-dependencies", f"-DoutputDirectory={target}", "-DincludeScope=runtime"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise DependencyError(f"resolving the {what} jars from Maven Central timed out after 15 minutes "
                              f"({', '.join(artifacts)})") from None
    if result.returncode != 0:
        raise DependencyError(f"{what} jars: {explain_maven_failure(result.stdout + result.stderr)} "
                              f"(wanted {', '.join(artifacts)})")
    jars = sorted(str(p) for p in target.glob("*.jar"))
    if plugin:
        for jar in set(jars) - set(plugin_jars(jars)):
            Path(jar).unlink()
        jars = plugin_jars(jars)
    if not jars:
        raise DependencyError(f"{what} jars: Maven finished but {target} holds no jars")
    (target / "manifest.json").write_text(json.dumps({"artifacts": list(artifacts), "jars": jars}, indent=1))
    return jars


def resolve_connect_jars(layout: HomeLayout,
                         artifacts: tuple[str, ...] = versions.KAFKA_CONNECT_ARTIFACTS) -> list[str]:
    """The Kafka Connect worker's classpath (resolved with Maven once)."""
    return _resolve(layout, "Kafka Connect", connect_jars_dir(layout), artifacts, None)


def resolve_debezium_jars(layout: HomeLayout,
                          artifacts: tuple[str, ...] = versions.DEBEZIUM_POSTGRES_ARTIFACTS) -> list[str]:
    """The Debezium Postgres connector's plugin jars (resolved with Maven once, importing debezium-bom)."""
    return _resolve(layout, "Debezium Postgres connector", debezium_plugin_dir(layout), artifacts,
                    versions.DEBEZIUM_VERSION, plugin=True)
