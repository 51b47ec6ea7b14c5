from pathlib import Path

import pytest
import yaml

from ingestion.contract_docs import render
from ingestion.contracts import ContractError, load_contracts, parse_contract
from jisr.settings import PROJECT_DIR

EXPECTED_SOURCES = {
    "programmes", "beneficiaries", "enrolments", "payments", "loans", "repayments", "ventures",
    "establishments", "occupancy", "service_requests", "survey_units", "survey_measurements",
}


def test_contracts_cover_every_partner_source(contracts):
    assert set(contracts) == EXPECTED_SOURCES


def test_contracts_are_in_dependency_order(contracts):
    order = list(contracts)
    for contract in contracts.values():
        for col in contract.columns:
            if col.references:
                target = col.references.split(".")[0]
                assert order.index(target) < order.index(contract.source), (contract.source, target)


def test_contracts_pseudonymise_every_direct_identifier(contracts):
    for contract in contracts.values():
        for col in contract.columns:
            if col.name in {"cin", "phone", "borrower_cin", "promoter_cin", "applicant_cin"} or "name_" in col.name and "key" not in col.name and contract.source == "beneficiaries":
                assert col.pii, f"{contract.source}.{col.name} is a direct identifier"
        assert not any(c.pii for c in contract.columns if c.raw_name == c.name)
        assert all(t == "BIGINT" for c in contract.pii_columns for n, t in contract.raw_columns.items() if n == c.raw_name)


def test_contract_docs_are_generated_from_contracts(contracts):
    committed = (PROJECT_DIR / "docs" / "data-contracts.md").read_text(encoding="utf-8")
    assert committed == render(contracts), "docs/data-contracts.md is stale: run `jisr contracts docs`"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "parquet"}, "format must be one of"),
        ({"file_pattern": "x_.*\\.csv"}, "named group 'batch'"),
        ({"supersede": "whatever"}, "supersede must be one of"),
        ({"primary_key": ["nope"]}, "primary key column 'nope'"),
    ],
)
def test_parse_contract_rejects_invalid_contracts(change, message):
    data = yaml.safe_load((PROJECT_DIR / "contracts" / "programmes.yml").read_text())
    data.update(change)
    with pytest.raises(ContractError, match=message):
        parse_contract(data)


def test_parse_contract_rejects_pii_without_pseudonym():
    data = yaml.safe_load((PROJECT_DIR / "contracts" / "beneficiaries.yml").read_text())
    del data["columns"][0]["pseudonym"]
    with pytest.raises(ContractError, match="pii and pseudonym go together"):
        parse_contract(data)


def test_load_contracts_detects_unknown_reference(tmp_path):
    data = yaml.safe_load((PROJECT_DIR / "contracts" / "enrolments.yml").read_text())
    (tmp_path / "enrolments.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(ContractError, match="references unknown source"):
        load_contracts(Path(tmp_path))


def test_contract_docs_say_a_far_smaller_re_delivery_is_rejected(contracts):
    """The supersede rules as documented: an earlier file of the batch delivered again
    replaces the one in effect, unless the volume gate (config/quality.yml, deliveries)
    rejects it."""
    text = " ".join(render(contracts).split())
    assert "the partner goes back to it), unless it has far fewer rows than the delivery in effect has loaded" in text
    assert "`deliveries` in config/quality.yml" in text
