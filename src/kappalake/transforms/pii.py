"""Pseudonymise fields with a keyed HMAC-SHA256, built from Spark's native functions (no Python UDF).

HMAC(K, m) = SHA256((K' xor opad) || SHA256((K' xor ipad) || m)), K' = K zero-padded to the
64-byte block (or SHA256(K) when K is longer). The result is lowercase hex, as
``hmac.new(key, value, sha256).hexdigest()`` gives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_BLOCK = 64


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256(value: Column, key: bytes) -> Column:
    """Hex HMAC-SHA256 of ``value`` (cast to its UTF-8 string bytes); null stays null."""
    if not key:
        raise ValueError("the HMAC key must not be empty")
    inner_pad, outer_pad = _pads(key)
    message = F.encode(value.cast("string"), "UTF-8")
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    return F.when(value.isNull(), F.lit(None).cast("string")).otherwise(
        F.sha2(F.concat(F.lit(outer_pad), inner), 256))


def pseudonymise(df: DataFrame, fields: Iterable[str], key: bytes) -> DataFrame:
    """Replace each of ``fields`` by its HMAC (string column, same name)."""
    fields = list(fields)
    if not fields:
        return df
    return df.withColumns({name: hmac_sha256(F.col(name), key) for name in fields})
