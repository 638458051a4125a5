import pytest

from finpipe.core.identifiers import (
    InvalidIdentifierError,
    validate_model,
    validate_name,
    validate_series_id,
    validate_ticker,
    validate_tickers,
)
from finpipe.core.storage import ParquetStore
from finpipe.data.universe import universe_frame


@pytest.mark.parametrize(
    "ticker", ["AAPL", "BRK-B", "7203.T", "^GSPC", "GC=F", "EURUSD=X", "S0001"]
)
def test_valid_tickers_pass(ticker):
    assert validate_ticker(ticker) == ticker


@pytest.mark.parametrize(
    "ticker", ["../../etc", "..", "AAPL/../x", "aapl", "", " AAPL", "A B", "A;DROP", "AAPL\n", None]
)
def test_invalid_tickers_are_rejected_with_the_rule(ticker):
    with pytest.raises(InvalidIdentifierError, match="invalid ticker"):
        validate_ticker(ticker)


def test_duplicate_tickers_rejected():
    with pytest.raises(InvalidIdentifierError, match="duplicate"):
        validate_tickers(["AAPL", "MSFT", "AAPL"])


@pytest.mark.parametrize("series_id", ["../x", "vixcls", "A-B", ""])
def test_invalid_series_ids_rejected(series_id):
    with pytest.raises(InvalidIdentifierError):
        validate_series_id(series_id)


@pytest.mark.parametrize("model", ["ridge", "hist_gbm", "ensemble", "lstm@challenger"])
def test_valid_models_pass(model):
    assert validate_model(model) == model


@pytest.mark.parametrize(
    "model", ["Ridge", "../x", "lstm@", "@x", "a@b@c", "x y", "", "a" * 41, "lstm@Champion", None]
)
def test_invalid_models_are_rejected_with_the_rule(model):
    with pytest.raises(InvalidIdentifierError, match="invalid model"):
        validate_model(model)


@pytest.mark.parametrize("name", ["lstm@challenger", "Ridge", "1x", "../x", ""])
def test_invalid_names_are_rejected_with_the_rule(name):
    with pytest.raises(InvalidIdentifierError, match="invalid name"):
        validate_name(name)


def test_store_validates_before_building_a_path(tmp_path):
    store = ParquetStore(str(tmp_path))
    with pytest.raises(InvalidIdentifierError):
        store.raw_key("prices", "../../etc")
    with pytest.raises(ValueError):
        store.path("raw", "..", "x")
    assert not any(tmp_path.iterdir())


def test_universe_from_tickers_validates_and_keeps_known_sectors():
    frame = universe_frame("aapl, NEWCO")
    assert frame.to_dict("records") == [
        {"ticker": "AAPL", "name": "Apple Inc.", "sector": "Information Technology"},
        {"ticker": "NEWCO", "name": "NEWCO", "sector": "Unknown"},
    ]
    with pytest.raises(InvalidIdentifierError):
        universe_frame("AAPL,../../etc")
