"""Spark settings of a target that runs on a standalone cluster (``spark.master: spark://...`` or
``local-stack``, the cluster of ``kappalake stack up --profile cluster``).

* the master URL (``local-stack``: the local cluster's current one);
* kappalake shipped to the executors as a zip (``spark.submit.pyFiles``, :mod:`kappalake.runtime.ship`);
* the executors' Python (the local cluster's executor virtualenv, which lacks kappalake on purpose);
* the driver on 127.0.0.1, one core and 1 GiB per executor;
* ``s3a://`` storage: hadoop-aws and the AWS SDK modules (:mod:`kappalake.runtime.s3`), and an
  ``fs.s3a.endpoint`` of ``local-stack`` replaced by the local S3 endpoint.
"""

from __future__ import annotations

import os

from kappalake.config.models import TargetConfig
from kappalake.runtime.paths import HomeLayout

LOCAL_STACK = "local-stack"
_ENDPOINT = "spark.hadoop.fs.s3a.endpoint"
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def is_cluster(target: TargetConfig) -> bool:
    master = target.spark.master or ""
    return master == LOCAL_STACK or master.startswith("spark://")


def uses_s3a(target: TargetConfig) -> bool:
    return target.storage.root.startswith("s3a://")


def cluster_conf(target: TargetConfig, layout: HomeLayout) -> tuple[dict[str, str], str | None]:
    """(Spark settings, the executors' python or None) for ``target``; empty for local-mode targets."""
    conf: dict[str, str] = {}
    python: str | None = None
    if is_cluster(target):
        from kappalake.runtime.ship import package_zip

        master = target.spark.master or ""
        if master == LOCAL_STACK:
            from kappalake.runtime.stack.spark_cluster import SparkCluster

            cluster = SparkCluster(layout)
            master = cluster.master_url()
            python = cluster.executor_python() or None
        conf.update({
            "spark.master": master,
            "spark.submit.pyFiles": str(package_zip(layout)),
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.executor.cores": "1",
            "spark.executor.memory": "1g",
        })
    if uses_s3a(target) and target.spark.conf.get(_ENDPOINT) == LOCAL_STACK:
        from kappalake.runtime.s3 import s3_endpoint_conf
        from kappalake.runtime.stack.object_store import ObjectStore

        conf.update(s3_endpoint_conf(ObjectStore(layout).endpoint()))
    if uses_s3a(target) and is_cluster(target):
        # Executors read the keys as the driver does (EnvironmentVariableCredentialsProvider). Spark passes
        # spark.executorEnv.* to the executor process's environment, never to its command line; the cluster
        # target's spark.redaction.regex hides them in the UI and event logs.
        for name in AWS_ENV:
            if os.environ.get(name):
                conf[f"spark.executorEnv.{name}"] = os.environ[name]
    return conf, python
