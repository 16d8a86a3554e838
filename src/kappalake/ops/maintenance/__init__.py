"""Table maintenance for jobs that run for weeks: Delta compaction, VACUUM and log retention, ClickHouse parts.

:func:`~kappalake.ops.maintenance.run.maintain` is what ``kappalake maintain`` runs, next to a live job.
"""

from kappalake.ops.maintenance.run import MaintenanceReport, maintain

__all__ = ["MaintenanceReport", "maintain"]
