"""``s3a://`` storage for targets that resolve their jars (the ``cluster`` target): hadoop-aws and the AWS SDK.

hadoop-aws must match the Hadoop client pyspark bundles (:attr:`SparkLine.hadoop`). Its POM names the AWS SDK
``bundle`` (2.35.4 for hadoop-aws 3.5.0: a **655 MB** jar); kappalake excludes the bundle and resolves the
individual SDK modules S3A uses instead (``s3``, ``s3-transfer-manager``, ``sts`` and what they pull in: 37 jars,
~13 MB, measured), once per Spark line, into the shared jar cache, only when a target's storage is on
``s3a://``. Jars pyspark already ships (netty, httpclient, slf4j, commons-codec) are left out so the JVM
loads one version of each.

Credentials are never in the configuration files: S3A reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
from the environment (driver and executors), or the target references them as ``${VAR}``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from kappalake import versions
from kappalake.errors import DependencyError
from kappalake.runtime.jars import _manifest_ok, explain_ivy_failure, ivy_settings
from kappalake.runtime.paths import HomeLayout

#: AWS SDK v2 of hadoop-aws 3.5.0 / 3.4.x (their POMs' ``aws-java-sdk-v2.version``).
AWS_SDK_VERSION = {"3.5.0": "2.35.4", "3.4.2": "2.29.52", "3.4.1": "2.24.6"}
SDK_MODULES = ("s3", "s3-transfer-manager", "sts")
#: The bundle (655 MB) and what pyspark ships already (Hadoop client 3.5.0, commons-logging).
EXCLUDES = ("software.amazon.awssdk:bundle", "org.apache.hadoop:hadoop-client-api",
            "org.apache.hadoop:hadoop-client-runtime", "commons-logging:commons-logging")


def s3_packages(line: versions.SparkLine) -> tuple[str, ...]:
    sdk = AWS_SDK_VERSION.get(line.hadoop)
    if sdk is None:
        raise DependencyError(f"no AWS SDK version known for hadoop-aws {line.hadoop} (Spark {line.spark})")
    return (line.hadoop_aws_package, *(f"software.amazon.awssdk:{m}:{sdk}" for m in SDK_MODULES))


def _manifest(layout: HomeLayout, line: versions.SparkLine) -> Path:
    return layout.cache / "jars" / f"spark-{line.name}-s3a-jars.json"


def _artifact(jar: str) -> str:
    """``org.apache.hadoop_hadoop-aws-3.5.0.jar`` -> ``hadoop-aws``; ``netty-codec-4.2.13.Final.jar`` -> ``netty-codec``."""
    name = Path(jar).name.split("_", 1)[-1]
    return re.sub(r"-\d[\w.\-]*\.jar$", "", name)


_IVY_PROBE = """
import json, sys
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").appName("kappalake-resolve-s3a")
         .config("spark.jars.packages", sys.argv[1]).config("spark.jars.ivy", sys.argv[2])
         .config("spark.jars.excludes", sys.argv[3]).config("spark.jars.ivySettings", sys.argv[4])
         .config("spark.ui.enabled", "false").getOrCreate())
jars = [j for j in spark.sparkContext.getConf().get("spark.jars", "").split(",") if j]
print("KAPPALAKE_JARS=" + json.dumps([j.removeprefix("file://").removeprefix("file:") for j in jars]))
spark.stop()
"""


def resolve_s3_jars(layout: HomeLayout, line: versions.SparkLine | None = None) -> list[str]:
    """hadoop-aws and the AWS SDK modules of ``line`` (resolved once, then from the manifest)."""
    import pyspark

    line = line or versions.selected_line()
    packages = s3_packages(line)
    manifest = _manifest(layout, line)
    existing = _manifest_ok(manifest, "packages", list(packages))
    if existing:
        return existing
    layout.ivy.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run([sys.executable, "-c", _IVY_PROBE, ",".join(packages), str(layout.ivy),
                                 ",".join(EXCLUDES), str(ivy_settings(layout))], capture_output=True, text=True,
                                timeout=900)
    except subprocess.TimeoutExpired:
        raise DependencyError(f"resolving {', '.join(packages)} timed out after 15 minutes") from None
    marker = next((ln for ln in result.stdout.splitlines() if ln.startswith("KAPPALAKE_JARS=")), None)
    if result.returncode != 0 or marker is None:
        raise DependencyError(f"s3a jars: {explain_ivy_failure(result.stdout + result.stderr)} "
                              f"(wanted {', '.join(packages)})")
    shipped = {_artifact(j) for j in os.listdir(Path(pyspark.__file__).parent / "jars")}
    jars = [j for j in json.loads(marker.split("=", 1)[1]) if _artifact(j) not in shipped]
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"packages": list(packages), "jars": jars}, indent=1))
    return jars


def s3_endpoint_conf(endpoint: str) -> dict[str, str]:
    """S3A settings of an S3-compatible endpoint (path-style buckets; plain HTTP for ``http://``)."""
    return {
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
        "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
        "spark.hadoop.fs.s3a.aws.credentials.provider":
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
    }
