"""Small files next to a checkpoint, through Hadoop's FileSystem (local, s3a://, abfss://, dbfs:/ alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath  # type: ignore[attr-defined]


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write ``text`` to ``path`` (overwriting), creating parent directories."""
    fs, hpath = _fs(spark, path)
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str | None:
    """The content of ``path``, or None when it does not exist."""
    fs, hpath = _fs(spark, path)
    if not fs.exists(hpath):
        return None
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    stream = fs.open(hpath)
    try:
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def list_names(spark: SparkSession, directory: str) -> list[str]:
    """File names directly under ``directory`` (empty when it does not exist)."""
    fs, hpath = _fs(spark, directory)
    if not fs.exists(hpath):
        return []
    return [str(status.getPath().getName()) for status in fs.listStatus(hpath)]


def delete(spark: SparkSession, path: str) -> None:
    fs, hpath = _fs(spark, path)
    fs.delete(hpath, False)
