"""Ship kappalake to Spark executors as a zip (``spark.submit.pyFiles``), as a Databricks wheel task or a
Spark-on-k8s image would bring it: executors import the package from the zip, not from a source tree on a
shared path.

The zip holds the installed ``kappalake`` package (modules and resource files, no ``__pycache__``), built
under the data dir's cache and named by a hash of its content, so a changed source gives a new zip and an
unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import kappalake
from kappalake.runtime.paths import HomeLayout


def _files(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def package_zip(layout: HomeLayout) -> Path:
    """The zip of the installed kappalake package (built once per content)."""
    package = Path(kappalake.__file__).resolve().parent
    files = _files(package)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    target = layout.cache / "pyfiles" / f"kappalake-{digest.hexdigest()[:16]}.zip"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, Path("kappalake") / path.relative_to(package))
    partial.replace(target)
    return target
