"""Running jobs register their ``/metrics`` endpoint with the local Prometheus (``file_sd``).

One JSON file per job under ``$KAPPALAKE_HOME/stack/prometheus/targets``, named after pipeline, layer
and run, so a restarted job (new port) replaces the registration of the one before it. Prometheus
(:mod:`kappalake.runtime.stack.prometheus`) watches ``*.json`` there; files are written atomically
(a ``.tmp`` file, then a rename) so it never reads half a file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.prometheus import targets_dir

WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def target_file(layout: HomeLayout, pipeline: str, layer: str, run: str = "live") -> Path:
    """The registration file of one job (``<pipeline>.<layer>.<run>.json``, unsafe characters replaced)."""
    name = ".".join(re.sub(r"[^A-Za-z0-9_+-]", "_", part) for part in (pipeline, layer, run))
    return targets_dir(layout) / f"{name}.json"


def _address(host: str, port: int) -> str:
    """``host:port`` Prometheus scrapes; an endpoint bound to every interface is scraped on loopback."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def register_metrics_target(layout: HomeLayout, pipeline: str, layer: str, host: str, port: int,
                            run: str = "live") -> Path:
    """Register the job serving ``/metrics`` on ``host:port``; ``layer`` is its layer, or its layers
    joined by ``+`` (``bronze+silver``). Returns the file written."""
    path = target_file(layout, pipeline, layer, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = [{"targets": [_address(host, port)], "labels": {"pipeline": pipeline, "layer": layer}}]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not matched by the *.json glob
    tmp.write_text(json.dumps(entry, indent=1))
    tmp.replace(path)
    return path


def unregister_metrics_target(layout: HomeLayout, pipeline: str, layer: str, host: str, port: int,
                              run: str = "live") -> bool:
    """Remove the job's registration if it still names ``host:port`` (a newer job's is left alone)."""
    path = target_file(layout, pipeline, layer, run)
    try:
        entries = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return False
    if not any(_address(host, port) in entry.get("targets", []) for entry in entries):
        return False
    path.unlink(missing_ok=True)
    return True


def registered_targets(layout: HomeLayout) -> dict[str, list[dict]]:
    """Every registration file's entries, by file name."""
    out: dict[str, list[dict]] = {}
    for path in sorted(targets_dir(layout).glob("*.json")):
        try:
            out[path.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out
