"""hmac_sha256 (built from Spark's native functions) against Python's hmac module; pseudonymise."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from kappalake.transforms.pii import hmac_sha256, pseudonymise

KEY = b"kappalake-test-key"
OTHER_KEY = b"kappalake-other-key"
BLOCK_KEY = b"k" * 64  # exactly one SHA-256 block: used as is
LONG_KEY = bytes(range(100))  # longer than a block: hashed first
UNICODE_KEY = "clé-🔑".encode()
KEYS = {"key": KEY, "other": OTHER_KEY, "block": BLOCK_KEY, "long": LONG_KEY, "unicode_key": UNICODE_KEY}

VALUES = ["card-4111-1111", "ünïcødé ✓ 日本語 🙂", "", " ", "x" * 1000, None]


def expected_hmac(key: bytes, value: str | None) -> str | None:
    return None if value is None else hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def test_hmac_matches_python_for_every_value_and_key(spark) -> None:
    df = spark.createDataFrame([(i, v) for i, v in enumerate(VALUES)], "id int, v string")

    actual = df.select("id", *[hmac_sha256(F.col("v"), key).alias(name) for name, key in KEYS.items()],
                       hmac_sha256(F.col("v"), KEY).alias("key_again")).orderBy("id")

    expected = spark.createDataFrame(
        [(i, *[expected_hmac(key, v) for key in KEYS.values()], expected_hmac(KEY, v)) for i, v in enumerate(VALUES)],
        "id int, " + ", ".join(f"{name} string" for name in [*KEYS, "key_again"]))
    assert_df_equality(actual, expected, ignore_nullable=True)

    rows = actual.collect()
    for row in rows[:-1]:  # every non-null value
        assert len(row["key"]) == 64 and row["key"] == row["key"].lower()
        assert row["key"] == row["key_again"]  # stable across calls
        assert len({row[name] for name in KEYS}) == len(KEYS)  # a different key, a different pseudonym
    assert all(rows[-1][name] is None for name in KEYS)  # null stays null


def test_non_string_values_hash_their_string_form(spark) -> None:
    df = spark.createDataFrame([(42, Decimal("12.50"))], "n long, d decimal(12,2)")
    row = df.select(hmac_sha256(F.col("n"), KEY).alias("n"), hmac_sha256(F.col("d"), KEY).alias("d")).first()
    assert row["n"] == expected_hmac(KEY, "42") and row["d"] == expected_hmac(KEY, "12.50")


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        hmac_sha256(F.col("v"), b"")


def test_pseudonymise_replaces_only_the_listed_fields(spark) -> None:
    schema = "event_id string, card_id string, merchant_id string, amount decimal(12,2)"
    rows = [("e-1", "card-1", "m-1", Decimal("12.50")), ("e-2", None, "m-2", Decimal("3.00")),
            ("e-3", "card-1", "m-1", Decimal("0.10"))]
    df = spark.createDataFrame(rows, schema)

    actual = pseudonymise(df, ["card_id"], KEY)

    expected = spark.createDataFrame(
        [(e, expected_hmac(KEY, c), m, a) for e, c, m, a in rows], schema)
    assert actual.columns == df.columns
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_pseudonymise_several_fields_and_none(spark) -> None:
    df = spark.createDataFrame([("e-1", "card-1", "m-1")], "event_id string, card_id string, merchant_id string")
    assert pseudonymise(df, [], KEY) is df
    row = pseudonymise(df, ("card_id", "merchant_id"), KEY).first()
    assert tuple(row) == ("e-1", expected_hmac(KEY, "card-1"), expected_hmac(KEY, "m-1"))
