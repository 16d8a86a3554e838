"""Find a Java 17+ runtime, or fail with a message saying how to install one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from kappalake.errors import DependencyError

MIN_JAVA = 17
INSTALL_HINT = "install it with: sudo apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME)"


def find_java() -> Path:
    """Path of the ``java`` executable: ``$JAVA_HOME/bin/java`` or ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.exists():
            return candidate
        raise DependencyError(f"JAVA_HOME={java_home} has no bin/java; {INSTALL_HINT}")
    found = shutil.which("java")
    if not found:
        raise DependencyError(f"Java {MIN_JAVA}+ is required (Spark and the local Kafka broker run on it) "
                              f"but no 'java' is on PATH; {INSTALL_HINT}")
    return Path(found)


def parse_java_major(version_output: str) -> int:
    """Major version from ``java -version`` output (``1.8.0_392`` -> 8, ``17.0.15`` -> 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        raise DependencyError(f"cannot read the Java version from: {version_output.strip()[:200]!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java(java: Path | None = None) -> tuple[Path, int]:
    """Return (java path, major version); raise DependencyError if missing or older than 17."""
    java = java or find_java()
    try:
        result = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise DependencyError(f"cannot run {java}: {exc}; {INSTALL_HINT}") from None
    major = parse_java_major(result.stderr + result.stdout)
    if major < MIN_JAVA:
        raise DependencyError(f"{java} is Java {major}; kappalake needs Java {MIN_JAVA} or newer; {INSTALL_HINT}")
    return java, major
