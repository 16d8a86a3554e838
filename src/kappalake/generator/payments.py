"""Card payment events: keyed by card, a few merchants per card, amounts log-normally spread."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

COUNTRIES = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "NL": "EUR", "JP": "JPY", "BR": "BRL", "IN": "INR"}
KEY_FIELD = "card_id"
_COUNTRY_CODES = sorted(COUNTRIES)


class PaymentsModel:
    """Builds one payment payload per call from a seeded RNG."""

    def __init__(self, rng: random.Random, cards: int = 1000, merchants: int = 300) -> None:
        self.rng = rng
        self.cards = [f"card-{i:06d}" for i in range(cards)]
        self.merchants = [f"m-{i:05d}" for i in range(merchants)]
        self.home_country = {card: rng.choice(_COUNTRY_CODES) for card in self.cards}

    def payload(self, event_id: str, event_time: datetime) -> dict[str, Any]:
        rng = self.rng
        card = rng.choice(self.cards)
        country = self.home_country[card] if rng.random() < 0.9 else rng.choice(_COUNTRY_CODES)
        return {
            "event_id": event_id,
            "card_id": card,
            "merchant_id": rng.choice(self.merchants),
            "amount": round(min(rng.lognormvariate(3.2, 1.0), 50_000.0), 2),
            "currency": COUNTRIES[country],
            "country": country,
            "event_time": event_time,
        }

    def wrong_type(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A payload whose amount is not a number."""
        return {**payload, "amount": self.rng.choice(["12,50", "free", "NaN-ish", "€12"])}
