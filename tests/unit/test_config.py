import pytest

from service.errors import ConfigError
from service.shell.config import DEV_SECRETS, Config, generate_secrets, secret_weakness

PRODUCTION = {
    "APP_ENV": "production",
    "GOOGLE_CLOUD_PROJECT": "clinic-prod",
    "ARCHIVE_BUCKET": "clinic-intake-archive",
    "META_ACCESS_TOKEN": "EAAG-a-real-looking-token",
    "WHATSAPP_PHONE_NUMBER_ID": "123456789012345",
    "WHATSAPP_APP_SECRET": "3f9a1c7e5b2d8046a9e17c3b5d2f8e60",
    "WHATSAPP_VERIFY_TOKEN": "verify-token-long-enough",
    "WHATSAPP_START_TEMPLATE": "intake_start",
    "KMS_KEY_URI": "gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
    "ZIP_PASSWORD": "a-long-zip-master-secret",
    "SECRET_KEY": "k3Rj9vXq2LmW8tYp5ZsN0bHc7GfD4aUe6QwE1rTy",
    "PSEUDONYM_KEY": "Pq7Ld2Xw9Nf4Kb8Rt1Vm6Hs3Jy5Gc0Ze",
}
STRONG = "Zq8Vn2Lk5Wc9Xr3Tb7Ym1Hd6Jf4Gs0PaQe"  # 34 characters, a stand-in for a random secret


def test_development_starts_with_no_environment_at_all():
    config = Config.from_env({})
    assert config.app_env == "development"
    assert config.export_link_ttl_seconds == 900


def test_a_complete_production_environment_is_accepted():
    config = Config.from_env(PRODUCTION)
    assert config.is_production
    assert config.archive_bucket == "clinic-intake-archive"


def test_production_lists_every_missing_setting_at_once():
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"APP_ENV": "production"})
    message = str(raised.value)
    for name in ("ARCHIVE_BUCKET", "SECRET_KEY", "ZIP_PASSWORD", "KMS_KEY_URI",
                 "WHATSAPP_APP_SECRET", "META_ACCESS_TOKEN"):  # fmt: skip
        assert name in message
    assert len(raised.value.problems) >= 10


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("LOCAL_KEYSET_PATH", "/tmp/keyset.json", "LOCAL_KEYSET_PATH must not be set"),
        ("FIRESTORE_EMULATOR_HOST", "127.0.0.1:8080", "FIRESTORE_EMULATOR_HOST must not"),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 32"),
        ("SECRET_KEY", DEV_SECRETS["secret_key"], "SECRET_KEY holds the published"),
        ("ZIP_PASSWORD", DEV_SECRETS["zip_password"], "ZIP_PASSWORD holds the published"),
        ("GRAPH_API_URL", "http://graph.example", "GRAPH_API_URL must be an https"),
        ("KMS_KEY_URI", "projects/p/keys/k", "KMS_KEY_URI must look like"),
        ("INTAKE_FAILPOINTS", "conversation.after_commit:kill", "INTAKE_FAILPOINTS must not"),
        ("OUTBOX_LEASE_SECONDS", "5", "OUTBOX_LEASE_SECONDS must be at least 120"),
    ],
)
def test_production_refuses_unsafe_settings(name, value, complaint):
    with pytest.raises(ConfigError, match=complaint):
        Config.from_env({**PRODUCTION, name: value})


def test_an_unknown_app_env_is_refused():
    with pytest.raises(ConfigError, match="APP_ENV must be one of"):
        Config.from_env({"APP_ENV": "prod"})


@pytest.mark.parametrize("value", ["abc", "10", "-5", "99999999"])
def test_a_malformed_link_lifetime_is_refused(value):
    with pytest.raises(ConfigError, match="EXPORT_LINK_TTL_SECONDS"):
        Config.from_env({"EXPORT_LINK_TTL_SECONDS": value})


def test_to_env_rebuilds_the_same_config():
    config = Config(app_env="test", archive_bucket="b", kms_endpoint="http://127.0.0.1:1")
    assert Config.from_env(config.to_env()) == config


def test_failpoints_and_a_short_outbox_lease_are_accepted_outside_production():
    config = Config.from_env(
        {"APP_ENV": "test", "INTAKE_FAILPOINTS": "conversation.after_commit:kill@2",
         "OUTBOX_LEASE_SECONDS": "3"}
    )  # fmt: skip
    assert config.failpoints == "conversation.after_commit:kill@2"
    assert config.outbox_lease_seconds == 3
    assert Config.from_env(config.to_env()) == config


@pytest.mark.parametrize(
    ("name", "value"),
    [("INTAKE_FAILPOINTS", "after_commit:kill"), ("OUTBOX_LEASE_SECONDS", "0"),
     ("OUTBOX_LEASE_SECONDS", "ten")],
)  # fmt: skip
def test_a_malformed_failpoint_spec_or_lease_is_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({"APP_ENV": "test", name: value})


def test_components_refuse_failpoints_in_a_production_config_built_in_code():
    from service.shell.components import build_components

    production = Config(app_env="production", failpoints="conversation.after_commit:kill")
    with pytest.raises(ConfigError, match="INTAKE_FAILPOINTS"):
        build_components(production)


@pytest.mark.parametrize(
    ("environment", "hops"),
    [
        ({}, 0),  # no proxy: X-Forwarded-For is ignored
        ({"K_SERVICE": "intake"}, 1),  # Cloud Run's front end
        ({"K_SERVICE": "intake", "TRUSTED_PROXY_HOPS": "2"}, 2),  # a load balancer in front
        ({"K_SERVICE": "intake", "TRUSTED_PROXY_HOPS": "0"}, 0),
        ({"TRUSTED_PROXY_HOPS": "1"}, 1),
    ],
)
def test_proxy_hops_are_trusted_only_on_cloud_run_or_when_configured(environment, hops):
    config = Config.from_env({"APP_ENV": "test", **environment})
    assert config.trusted_proxy_hops == hops
    assert Config.from_env(config.to_env()) == config


@pytest.mark.parametrize("value", ["-1", "6", "one"])
def test_a_malformed_proxy_hop_count_is_refused(value):
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS must be a whole number of proxies"):
        Config.from_env({"TRUSTED_PROXY_HOPS": value})


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("ZIP_PASSWORD", "a" * 16, "ZIP_PASSWORD has fewer than 6 different characters"),
        ("SECRET_KEY", "a" * 32, "SECRET_KEY has fewer than 6 different characters"),
        ("SECRET_KEY", "ab" * 24, "SECRET_KEY has fewer than 6 different"),
        ("SECRET_KEY", "abcdefgh" * 4, "SECRET_KEY repeats a shorter piece"),
        ("ZIP_PASSWORD", "changeme-changeme-changeme", "ZIP_PASSWORD repeats a shorter piece"),
        ("WHATSAPP_VERIFY_TOKEN", "111111222222", "WHATSAPP_VERIFY_TOKEN has fewer than 6"),
        ("WHATSAPP_APP_SECRET", "0" * 32, "WHATSAPP_APP_SECRET has fewer than 6"),
        ("META_ACCESS_TOKEN", "x" * 40, "META_ACCESS_TOKEN has fewer than 6"),
    ],
)
def test_production_refuses_guessable_secrets_without_quoting_them(name, value, complaint):
    with pytest.raises(ConfigError, match=complaint) as raised:
        Config.from_env({**PRODUCTION, name: value})
    assert value not in str(raised.value)
    assert "secrets generate" in str(raised.value)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ZIP_PASSWORD", "SECRET_KEY"),
        ("SECRET_KEY", "WHATSAPP_APP_SECRET"),
        ("WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN"),
        ("ZIP_PASSWORD", "META_ACCESS_TOKEN"),
    ],
)
def test_production_refuses_any_two_equal_secrets(first, second):
    with pytest.raises(ConfigError, match="must differ") as raised:
        Config.from_env({**PRODUCTION, first: STRONG, second: STRONG})
    problems = [problem for problem in raised.value.problems if "must differ" in problem]
    assert len(problems) == 1 and first in problems[0] and second in problems[0]
    assert STRONG not in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        "0123456789abcdef0123456789abcdee",  # a hex app secret, as Meta issues them
        "Zq8Vn2Lk5Wc9Xr3T",
        "verify-token-long-enough",
        "correct horse battery staple",
    ],
)
def test_varied_secrets_are_not_weak(value):
    assert secret_weakness(value) is None


def test_generated_secrets_are_accepted_by_production_and_differ_each_time():
    first, second = generate_secrets(), generate_secrets()
    assert set(first) == {"SECRET_KEY", "ZIP_PASSWORD", "WHATSAPP_VERIFY_TOKEN", "PSEUDONYM_KEY"}
    assert Config.from_env({**PRODUCTION, **first}).secret_key == first["SECRET_KEY"]
    assert all(first[name] != second[name] for name in first)
    assert len(first["SECRET_KEY"]) >= 64 and len(first["ZIP_PASSWORD"]) >= 32


@pytest.mark.parametrize("app_env", [None, "development"])
def test_a_cloud_run_container_refuses_to_start_as_development(app_env):
    environment = {"K_SERVICE": "intake", **({"APP_ENV": app_env} if app_env else {})}
    with pytest.raises(ConfigError, match="Cloud Run container .K_SERVICE is set.: set APP_ENV"):
        Config.from_env(environment)


def test_a_cloud_run_container_starts_in_production():
    config = Config.from_env({**PRODUCTION, "K_SERVICE": "intake"})
    assert config.is_production and config.trusted_proxy_hops == 1


@pytest.mark.parametrize(
    ("environ", "per_process"),
    [
        ({}, 2),
        ({"GUNICORN_THREADS": "8"}, 2),
        ({"GUNICORN_THREADS": "2"}, 1),
        ({"GUNICORN_THREADS": "1"}, 1),
        ({"GUNICORN_THREADS": "8", "EXPORT_CONCURRENCY": "5"}, 5),
        ({"EXPORT_CONCURRENCY": "3"}, 3),
    ],
)
def test_the_export_limit_leaves_a_request_thread_to_the_webhook(environ, per_process):
    config = Config.from_env({"APP_ENV": "test", **environ})
    assert config.exports_per_process == per_process
    assert config.export_concurrency_per_account == 1


def test_an_export_limit_as_large_as_the_thread_count_is_refused():
    with pytest.raises(ConfigError, match=r"EXPORT_CONCURRENCY \(4\) must be less than"):
        Config.from_env({"GUNICORN_THREADS": "4", "EXPORT_CONCURRENCY": "4"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXPORT_CONCURRENCY", "0"),
        ("EXPORT_CONCURRENCY", "two"),
        ("EXPORT_CONCURRENCY_PER_ACCOUNT", "0"),
        ("EXPORT_CONCURRENCY_PER_ACCOUNT", "65"),
        ("GUNICORN_THREADS", "-1"),
    ],
)
def test_a_malformed_export_limit_is_refused(name, value):
    with pytest.raises(ConfigError, match=f"{name} must be a whole number"):
        Config.from_env({name: value})


@pytest.mark.parametrize(("raw", "enabled"), [("false", False), ("0", False), ("TRUE", True)])
def test_portal_enabled_reads_true_or_false(raw, enabled):
    config = Config.from_env({"APP_ENV": "test", "PORTAL_ENABLED": raw})
    assert config.portal_enabled is enabled
    assert Config.from_env({"APP_ENV": "test", **config.to_env()}).portal_enabled is enabled


def test_portal_enabled_refuses_anything_but_true_or_false():
    with pytest.raises(ConfigError, match="PORTAL_ENABLED must be true or false"):
        Config.from_env({"APP_ENV": "test", "PORTAL_ENABLED": "maybe"})
