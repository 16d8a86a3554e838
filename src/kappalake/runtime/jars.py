"""Resolve the pinned JVM jars from Maven Central into the cache under the data directory.

* Spark connectors (Kafka source, Delta) of the selected Spark line (``KAPPALAKE_SPARK``): Spark's own
  ``spark.jars.packages`` resolution with the Ivy cache at ``<cache>/ivy``, run once per line by
  ``kappalake setup``; the resolved jar list is recorded in a manifest per line so later sessions load
  the jars with ``spark.jars`` and need no network.
* The Kafka broker for the local stack: ``mvn dependency:copy-dependencies`` from a generated POM
  (Spark is not involved there).

A failure raises DependencyError naming the artifact that could not be resolved.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path

from kappalake import versions
from kappalake.errors import DependencyError
from kappalake.runtime.paths import HomeLayout

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.kappalake</groupId>
  <artifactId>kappalake-kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"


def _maven_settings() -> Path:
    return Path(str(resources.files("kappalake.runtime") / "resources" / "maven-settings.xml"))


def broker_pom(artifacts: tuple[str, ...] = versions.KAFKA_BROKER_ARTIFACTS) -> str:
    """The POM whose runtime dependencies are the Kafka broker's classpath."""
    deps = []
    for coordinate in artifacts:
        group, artifact, version = coordinate.split(":")
        deps.append(_DEPENDENCY.format(g=group, a=artifact, v=version))
    return _POM.format(dependencies="\n".join(deps))


def explain_maven_failure(output: str) -> str:
    """Pick the line of Maven output that says what could not be resolved."""
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)
    for pattern in (r"Could not find artifact (\S+)", r"Could not transfer artifact (\S+)",
                    r"Failed to read artifact descriptor for (\S+)", r"Could not resolve dependencies for .*?: (.*)"):
        match = re.search(pattern, output)
        if match:
            return f"could not resolve {match.group(1).rstrip(':')} from Maven Central"
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    return errors[0].replace("[ERROR]", "").strip()[:400] if errors else output.strip()[-400:]


def _manifest_ok(manifest: Path, key: str, wanted: list[str]) -> list[str] | None:
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    jars = data.get("jars") or []
    if data.get(key) != wanted or not jars or not all(Path(j).exists() for j in jars):
        return None
    return jars


def broker_classpath(layout: HomeLayout) -> list[str] | None:
    """The resolved broker jars, or None when not (or no longer) resolved for the pinned version."""
    return _manifest_ok(layout.broker_jars / "manifest.json", "artifacts", list(versions.KAFKA_BROKER_ARTIFACTS))


def resolve_broker_jars(layout: HomeLayout, artifacts: tuple[str, ...] = versions.KAFKA_BROKER_ARTIFACTS) -> list[str]:
    """Resolve the Kafka broker jars with Maven (once); return the classpath entries."""
    existing = _manifest_ok(layout.broker_jars / "manifest.json", "artifacts", list(artifacts))
    if existing:
        return existing
    mvn = shutil.which("mvn")
    if not mvn:
        raise DependencyError("Maven ('mvn') is needed once to fetch the Kafka broker jars from Maven Central; "
                              "install it with: sudo apt-get install -y maven")
    target = layout.broker_jars
    work = layout.cache / "maven-broker"
    shutil.rmtree(target, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(broker_pom(artifacts))
    command = [mvn, "-B", "-q", "-s", str(_maven_settings()), "-f", str(work / "pom.xml"),
               "dependency:copy-dependencies", f"-DoutputDirectory={target}", "-DincludeScope=runtime"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise DependencyError("resolving the Kafka broker jars from Maven Central timed out after 15 minutes "
                              f"({', '.join(artifacts)})") from None
    if result.returncode != 0:
        raise DependencyError(f"Kafka broker jars: {explain_maven_failure(result.stdout + result.stderr)} "
                              f"(wanted {', '.join(artifacts)})")
    jars = sorted(str(p) for p in target.glob("*.jar"))
    if not jars:
        raise DependencyError(f"Kafka broker jars: Maven finished but {target} holds no jars")
    (target / "manifest.json").write_text(json.dumps({"artifacts": list(artifacts), "jars": jars}, indent=1))
    return jars


def installed_version(distribution: str) -> str | None:
    """The version of the installed Python ``distribution`` in this interpreter, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def require_matching_python_packages(line: versions.SparkLine) -> None:
    """Fail clearly when this interpreter's pyspark/delta-spark are not the ones of ``line``: the connector
    jars resolved for one Spark line do not load into another line's JVM."""
    wanted = {"pyspark": line.spark, "delta-spark": line.delta}
    found = {name: installed_version(name) for name in wanted}
    wrong = [f"{name} {found[name] or '(not installed)'}" for name in wanted if found[name] != wanted[name]]
    if wrong:
        raise DependencyError(
            f"{versions.LINE_ENV}={line.name} selects Spark {line.spark} with delta-spark {line.delta}, but "
            f"{sys.executable} has {' and '.join(wrong)}; run 'KAPPALAKE_SPARK={line.name} bash scripts/setup.sh' "
            f"(it installs that line into its own virtualenv) or set {versions.LINE_ENV} to this "
            "interpreter's line")


def spark_jars(layout: HomeLayout, line: versions.SparkLine | None = None) -> list[str] | None:
    """The resolved connector jars of ``line`` (default: the selected one), or None when setup has not
    resolved them."""
    line = line or versions.selected_line()
    return _manifest_ok(layout.spark_jars_manifest(line.name), "packages", list(line.packages))


_IVY_PROBE = """
import json, os, sys
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").appName("kappalake-resolve")
         .config("spark.jars.packages", sys.argv[1]).config("spark.jars.ivy", sys.argv[2])
         .config("spark.jars.ivySettings", sys.argv[3])
         .config("spark.ui.enabled", "false").getOrCreate())
jars = [j for j in spark.sparkContext.getConf().get("spark.jars", "").split(",") if j]
print("KAPPALAKE_JARS=" + json.dumps([j.removeprefix("file://").removeprefix("file:") for j in jars]))
spark.stop()
"""


#: Maven Central only. Spark's default resolvers also try ~/.m2, where a Maven run may have left a POM without
#: its jar (a version Maven saw but did not pick): Ivy then fails the whole resolution ("download failed").
_IVY_SETTINGS = """<ivysettings>
  <settings defaultResolver="central"/>
  <resolvers>
    <ibiblio name="central" m2compatible="true" root="{root}/"/>
  </resolvers>
</ivysettings>
"""


def ivy_settings(layout: HomeLayout) -> Path:
    """The Ivy settings file of the Spark connector resolution (written next to the Ivy cache)."""
    path = layout.ivy / "ivysettings.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_IVY_SETTINGS.format(root=versions.MAVEN_CENTRAL_URL))
    return path


def explain_ivy_failure(output: str) -> str:
    """Name the unresolved packages from spark-submit's Ivy report."""
    missing = sorted(set(re.findall(r"unresolved dependency: ([^\s:]+#[^\s;]+;[^\s:]+)", output)))
    if missing:
        names = [m.replace("#", ":").replace(";", ":") for m in missing]
        return f"could not resolve {', '.join(names)} from Maven Central"
    for line in output.splitlines():
        if "Exception" in line or "Error" in line:
            return line.strip()[:400]
    return output.strip()[-400:]


def resolve_spark_jars(layout: HomeLayout, line: versions.SparkLine | None = None) -> list[str]:
    """Resolve the connector jars of ``line`` (default: the selected one) with Spark's Ivy resolution
    (once per line); return the jar paths."""
    line = line or versions.selected_line()
    require_matching_python_packages(line)
    packages = line.packages
    existing = spark_jars(layout, line)
    if existing:
        return existing
    layout.ivy.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run([sys.executable, "-c", _IVY_PROBE, ",".join(packages), str(layout.ivy),
                                 str(ivy_settings(layout))], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise DependencyError(f"resolving {', '.join(packages)} timed out after 15 minutes") from None
    output = result.stdout + result.stderr
    marker = next((ln for ln in result.stdout.splitlines() if ln.startswith("KAPPALAKE_JARS=")), None)
    if result.returncode != 0 or marker is None:
        raise DependencyError(f"Spark connector jars: {explain_ivy_failure(output)} (wanted {', '.join(packages)})")
    jars = json.loads(marker.split("=", 1)[1])
    manifest = layout.spark_jars_manifest(line.name)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"packages": list(packages), "jars": jars}, indent=1))
    return jars
