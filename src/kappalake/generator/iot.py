"""IoT sensor readings: keyed by device, several sensors per device, values around a per-sensor baseline."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

SENSORS = {"temperature": (21.0, 2.5), "humidity": (45.0, 8.0), "pressure": (1013.0, 5.0), "vibration": (0.3, 0.1)}
KEY_FIELD = "device_id"
_SENSOR_NAMES = sorted(SENSORS)


class IotModel:
    """Builds one sensor reading per call from a seeded RNG."""

    def __init__(self, rng: random.Random, devices: int = 200) -> None:
        self.rng = rng
        self.devices = [f"dev-{i:05d}" for i in range(devices)]
        self.offset = {d: rng.uniform(-1.0, 1.0) for d in self.devices}

    def payload(self, event_id: str, event_time: datetime) -> dict[str, Any]:
        rng = self.rng
        device = rng.choice(self.devices)
        sensor = rng.choice(_SENSOR_NAMES)
        mean, spread = SENSORS[sensor]
        value = rng.gauss(mean + self.offset[device] * spread, spread)
        return {"event_id": event_id, "device_id": device, "sensor": sensor, "value": round(value, 4),
                "event_time": event_time}

    def wrong_type(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A payload whose value is not a number."""
        return {**payload, "value": self.rng.choice(["hot", "n/a", "1.2.3", "--"])}
