"""Gold view enrichment: the pure left join with a dimension table, the static Delta side, the config rules."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chispa import assert_df_equality

from kappalake.config.enrichment import EnrichConfig
from kappalake.config.loader import load_pipeline
from kappalake.config.models import PipelineConfig
from kappalake.errors import ConfigError
from kappalake.transforms.enrich import dimension_path, dimension_rows, enrich_events, fill_keys, read_dimension

CONF = Path(__file__).resolve().parents[2] / "conf"
EVENTS = "event_id string, merchant_id string, amount int"
DIM = ("merchant_id string, name string, category string, country string, risk_tier int, cdc_op string, "
       "cdc_deleted boolean")
ENTRY = EnrichConfig(pipeline="merchants", key="merchant_id", columns=["category", "risk_tier"])
ENRICHED_VIEW = {
    "enrich": [{"pipeline": "merchants", "key": "merchant_id", "columns": ["category", "risk_tier"]}],
    "window": {"kind": "tumbling", "size": "1 minute"},
    "group_by": ["category"],
    "metrics": {"txn_count": {"fn": "count"}, "amount_sum": {"fn": "sum", "column": "amount"},
                "risk_max": {"fn": "max", "column": "risk_tier"}},
    "clickhouse": {"table": "payments_merchant_category_1m"},
}


@pytest.fixture(autouse=True)
def one_shuffle_partition(spark):
    saved = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "1")
    yield
    spark.conf.set("spark.sql.shuffle.partitions", saved)


def dimension(spark, rows: list[tuple[Any, ...]] | None = None):
    return spark.createDataFrame(rows if rows is not None else [
        ("m1", "Cafe", "food", "GB", 1, "u", False),
        ("m2", "Air", "travel", "US", 3, "c", None),
        ("m3", "Gone", "books", "FR", 2, "d", True),
    ], DIM)


def events(spark):
    return spark.createDataFrame([("e1", "m1", 10), ("e2", "m2", 20), ("e3", "m3", 30), ("e4", "m9", 40),
                                  ("e5", None, 50)], EVENTS)


# --------------------------------------------------------------------------- the pure join

def test_enrich_adds_the_columns_keeps_every_event_and_leaves_misses_and_deleted_rows_null(spark) -> None:
    actual = enrich_events(events(spark), [(ENTRY, dimension(spark))])
    expected = spark.createDataFrame([
        ("e1", "m1", 10, "food", 1), ("e2", "m2", 20, "travel", 3),
        ("e3", "m3", 30, None, None),  # deleted at the source (cdc_deleted): no dimension row
        ("e4", "m9", 40, None, None),  # no dimension row
        ("e5", None, 50, None, None),  # no key
    ], f"{EVENTS}, category string, risk_tier int")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_dimension_rows_keep_key_and_columns_only_and_tables_without_cdc_deleted_keep_every_row(spark) -> None:
    rows = dimension_rows(dimension(spark).drop("cdc_deleted"), ENTRY)
    assert rows.columns == ["_enrich_key", "category", "risk_tier"]
    assert rows.count() == 3
    assert dimension_rows(dimension(spark), ENTRY).count() == 2


def test_enrich_with_a_differently_named_key_and_two_dimensions(spark) -> None:
    frame = spark.createDataFrame([("e1", "m1", "GB")], "event_id string, merchant string, country string")
    countries = spark.createDataFrame([("GB", "EMEA")], "code string, region string")
    by_merchant = EnrichConfig(pipeline="merchants", key={"merchant": "merchant_id"}, columns=["category"])
    by_country = EnrichConfig(pipeline="countries", key={"country": "code"}, columns=["region"])
    actual = enrich_events(frame, [(by_merchant, dimension(spark)), (by_country, countries)])
    expected = spark.createDataFrame([("e1", "m1", "GB", "food", "EMEA")],
                                     "event_id string, merchant string, country string, category string, "
                                     "region string")
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_fill_keys_puts_events_without_a_dimension_row_under_the_type_default(spark) -> None:
    enriched = enrich_events(events(spark), [(ENTRY, dimension(spark))])
    filled = fill_keys(enriched, ["category", "risk_tier"]).where("event_id in ('e1', 'e4')")
    assert sorted(tuple(r) for r in filled.select("event_id", "category", "risk_tier").collect()) == [
        ("e1", "food", 1), ("e4", "", 0)]
    assert fill_keys(enriched, []) is enriched


# --------------------------------------------------------------------------- the static Delta side

def test_read_dimension_is_a_plan_that_sees_the_latest_version_on_each_join(spark, tmp_path: Path) -> None:
    """Delta resolves the snapshot when a plan is analysed: the DataFrame read once at job start gives every
    later join (each micro-batch's) the table's current version. A regression here (a Delta upgrade that
    pins the snapshot) would make enrichment stale until the job restarts."""
    path = dimension_path(str(tmp_path), "merchants")
    assert path == f"{tmp_path}/merchants/silver"
    dimension(spark).write.format("delta").save(path)
    static = read_dimension(spark, path, ENTRY, "merchant_category_1m")
    first = {r["event_id"]: r["category"] for r in enrich_events(events(spark), [(ENTRY, static)]).collect()}
    assert first["e1"] == "food"
    dimension(spark, [("m1", "Cafe", "grocery", "GB", 1, "u", False), ("m2", "Air", "travel", "US", 3, "d", True)]
              ).write.format("delta").mode("overwrite").save(path)
    later = {r["event_id"]: r["category"] for r in enrich_events(events(spark), [(ENTRY, static)]).collect()}
    assert later["e1"] == "grocery" and later["e2"] is None


def test_read_dimension_of_a_missing_table_says_which_table_and_to_run_its_pipeline_first(spark,
                                                                                           tmp_path: Path) -> None:
    path = dimension_path(str(tmp_path), "merchants")
    with pytest.raises(ConfigError) as info:
        read_dimension(spark, path, ENTRY, "merchant_category_1m")
    message = str(info.value)
    assert path in message and "'merchants'" in message and "run that pipeline first" in message
    assert "'merchant_category_1m'" in message
    assert info.value.exit_code == 2


def test_read_dimension_without_a_requested_column_names_it(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "dim")
    dimension(spark).drop("risk_tier").write.format("delta").save(path)
    with pytest.raises(ConfigError, match="no column 'risk_tier'"):
        read_dimension(spark, path, ENTRY, "merchant_category_1m")


# --------------------------------------------------------------------------- configuration

#: A test pipeline: the payments events, gold views given per test.
PAYMENTS = """
name: payments
source: {subscribe: payments}
events:
  id: event_id
  time: event_time
  schema:
    event_id: {type: string, required: true}
    card_id: {type: string, required: true}
    merchant_id: {type: string, required: true}
    amount: {type: "decimal(12,2)", required: true}
    country: {type: string, required: true}
    event_time: {type: timestamp, required: true}
"""


def payments(**views: dict[str, Any]) -> dict[str, Any]:
    return {**yaml.safe_load(PAYMENTS), "gold": {"views": views}}


def test_group_by_and_metrics_may_name_enrichment_columns_which_need_not_be_required() -> None:
    config = PipelineConfig.model_validate(payments(merchant_category_1m=ENRICHED_VIEW))
    view = config.gold.views["merchant_category_1m"]
    assert view.enrich[0].event_field == view.enrich[0].dimension_key == "merchant_id"
    assert view.enrich[0].columns == ["category", "risk_tier"]
    assert PipelineConfig.model_validate(payments()).gold.views == {}


def test_on_as_a_mapping_names_the_event_field_and_the_dimension_key() -> None:
    entry = EnrichConfig.model_validate({"pipeline": "merchants", "key": {"merchant_id": "id"}, "columns": ["x"]})
    assert (entry.event_field, entry.dimension_key) == ("merchant_id", "id")
    with pytest.raises(ValueError, match="one {event_field: dimension_key} pair"):
        EnrichConfig.model_validate({"pipeline": "merchants", "key": {"a": "b", "c": "d"}, "columns": ["x"]})
    with pytest.raises(ValueError, match="twice"):
        EnrichConfig.model_validate({"pipeline": "merchants", "key": "a", "columns": ["x", "x"]})


@pytest.mark.parametrize(("change", "message"), [
    ({"enrich": [{"pipeline": "merchants", "key": "merchant_id", "columns": ["country"]}], "group_by": ["country"]},
     "'country' is also an event field"),
    ({"enrich": [{"pipeline": "merchants", "key": "merchant", "columns": ["category"]}]},
     "key: 'merchant' is not declared in events.schema"),
    ({"enrich": [{"pipeline": "merchants", "key": "merchant_id", "columns": ["category"]},
                 {"pipeline": "merchants2", "key": "merchant_id", "columns": ["category"]}]},
     "'category' is already added by another enrich entry"),
    ({"enrich": []}, "group_by: 'category' is not declared in events.schema"),
    ({"enrich": [{"pipeline": "merchants", "key": "merchant_id", "columns": ["category"]}]},
     "metrics.risk_max.column: 'risk_tier' is not declared"),
])
def test_bad_enrichment_is_a_config_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PipelineConfig.model_validate(payments(v={**ENRICHED_VIEW, **change}))


def conf_dir(tmp_path: Path, pipelines: dict[str, dict[str, Any]]) -> Path:
    (tmp_path / "pipelines").mkdir()
    shutil.copy(CONF / "kappalake.yml", tmp_path / "kappalake.yml")
    for name, data in pipelines.items():
        (tmp_path / "pipelines" / f"{name}.yml").write_text(yaml.safe_dump({**data, "name": name}))
    return tmp_path


def test_loader_accepts_an_enrichment_from_a_declared_pipeline(tmp_path: Path) -> None:
    conf = conf_dir(tmp_path, {"payments_enriched": payments(merchant_category_1m=ENRICHED_VIEW),
                               "merchants": payments()})
    config = load_pipeline("payments_enriched", conf, "local")
    assert config.gold.views["merchant_category_1m"].enrich[0].pipeline == "merchants"


def test_loader_rejects_an_enrichment_from_an_unknown_pipeline_naming_view_and_pipeline(tmp_path: Path) -> None:
    conf = conf_dir(tmp_path, {"payments_enriched": payments(merchant_category_1m=ENRICHED_VIEW)})
    with pytest.raises(ConfigError) as info:
        load_pipeline("payments_enriched", conf, "local")
    message = str(info.value)
    assert "gold.views.merchant_category_1m.enrich" in message and "no pipeline named 'merchants'" in message
    assert "payments_enriched.yml:" in message
