from pathlib import Path

import pytest

from parking_ml.config import Settings, SettingsError, load_settings


def test_defaults_give_embedded_local_mode(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.home == (tmp_path / "var").resolve()
    assert s.lake_url == f"file://{tmp_path.resolve()}/var/lake"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert s.optuna_storage == f"sqlite:///{tmp_path.resolve()}/var/optuna.db"
    assert s.model_name == "parking-spaces"
    assert s.profile == "demo"
    assert s.api_keys == []
    assert s.storage_options() == {}
    assert s.serving_tta is None  # the model package's own test-time augmentation


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("PARKING_LAKE_URL", "s3://bucket/prefix/")
    monkeypatch.setenv("PARKING_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("PARKING_PROFILE", "smoke")
    monkeypatch.setenv("PARKING_API_KEYS", " k1 , k2,,")
    monkeypatch.setenv("PARKING_MLFLOW_PORT", "5123")
    monkeypatch.setenv("PARKING_TTA", "none")
    s = load_settings()
    assert s.home == tmp_path / "h"
    assert s.lake_url == "s3://bucket/prefix"
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.profile == "smoke"
    assert s.api_keys == ["k1", "k2"]
    assert s.serving_tta == "none"
    assert s.storage_options() == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}


def test_tracking_uri_follows_port_when_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("PARKING_MLFLOW_PORT", "5999")
    assert load_settings(home=tmp_path).mlflow_tracking_uri == "http://127.0.0.1:5999"


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("PARKING_PROFILE", "huge", "PARKING_PROFILE"),
        ("PARKING_THREADS", "zero", "PARKING_THREADS"),
        ("PARKING_LAKE_URL", "ftp://x/y", "PARKING_LAKE_URL"),
        ("PARKING_MLFLOW_PORT", "70000", "PARKING_MLFLOW_PORT"),
        ("PARKING_TTA", "rot8", "PARKING_TTA"),
        ("PARKING_CPU_BF16", "yes", "PARKING_CPU_BF16"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert needle in str(err.value)
    assert value in str(err.value)


def test_production_refuses_missing_and_placeholder_keys(monkeypatch):
    monkeypatch.setenv("PARKING_ENV", "production")
    with pytest.raises(SettingsError, match="PARKING_API_KEYS must be set"):
        load_settings()
    monkeypatch.setenv("PARKING_API_KEYS", "changeme")
    with pytest.raises(SettingsError, match="placeholder"):
        load_settings()
    monkeypatch.setenv("PARKING_API_KEYS", "x" * 24)
    monkeypatch.setenv("PARKING_S3_SECRET_ACCESS_KEY", "minioadmin")
    with pytest.raises(SettingsError, match="PARKING_S3_SECRET_ACCESS_KEY"):
        load_settings()
    monkeypatch.setenv("PARKING_S3_SECRET_ACCESS_KEY", "a-real-looking-secret-value")
    assert load_settings().env == "production"


def test_secret_values_are_not_echoed_in_errors(monkeypatch):
    monkeypatch.setenv("PARKING_ENV", "production")
    monkeypatch.setenv("PARKING_API_KEYS", "x" * 24)
    monkeypatch.setenv("PARKING_S3_SECRET_ACCESS_KEY", "minioadmin")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "x" * 24 not in str(err.value)


def test_settings_are_immutable(tmp_path):
    s = Settings(home=tmp_path)
    with pytest.raises(Exception):  # noqa: B017 (pydantic raises ValidationError for frozen models)
        s.profile = "full"  # type: ignore[misc]
    assert isinstance(s.home, Path)
