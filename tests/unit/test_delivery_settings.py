"""A center's ``delivery`` entry is read strictly: a mistyped or unknown key stops the start
with a message naming it, for every backend, instead of being ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.caldav_delivery import CalDavDelivery
from scheduler.delivery_settings import DeliverySettingsInvalid, secret_from
from scheduler.directory import CenterDirectory, Delivery, default_directory
from scheduler.ews_delivery import EwsDelivery, EwsSettingsInvalid
from scheduler.graph_delivery import GraphDelivery, GraphSettingsInvalid
from scheduler.smtp_delivery import SmtpDelivery
from services.bootstrap import CenterDeliveries, DeliveryUnavailable, build_deliveries

EWS = {"service_endpoint": "https://mail.contoso.com/EWS/Exchange.asmx",
       "username": "CONTOSO\\svc", "password_env": "FT_EWS"}
GRAPH = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "app-id",
         "client_secret_env": "FT_GRAPH"}
ENV = {"FT_EWS": "pw", "FT_GRAPH": "secret", "FT_PW": "pw"}


def _build(backend: str, settings: dict[str, Any]) -> object:
    match backend:
        case "smtp":
            return SmtpDelivery.from_settings(settings, ENV)
        case "caldav":
            return CalDavDelivery.from_settings(settings, ENV)
        case "ews":
            return EwsDelivery.from_settings(settings, ENV, organizer="ft@contoso.com")
        case "graph":
            return GraphDelivery.from_settings(settings, ENV, organizer="ft@contoso.com")
    raise AssertionError(backend)


@pytest.mark.parametrize(("backend", "settings", "typo"), [
    pytest.param("smtp", {"host": "mail.example.com", "starttsl": False}, "starttsl",
                 id="smtp"),
    pytest.param("caldav", {"url": "https://cal.example.com/", "calendar_path": "/{email}/"},
                 "calendar_path", id="caldav"),
    pytest.param("ews", {**EWS, "auth": "basic"}, "auth", id="ews"),
    pytest.param("graph", {**GRAPH, "base_ur": "https://graph.example.com/v1.0"}, "base_ur",
                 id="graph"),
])
def test_a_mistyped_key_is_named_with_the_backends_own_keys(
        backend: str, settings: dict[str, Any], typo: str) -> None:
    with pytest.raises(DeliverySettingsInvalid) as caught:
        _build(backend, settings)

    message = str(caught.value)
    assert message.startswith(f"{backend}: delivery.{typo}: not a setting of the {backend} "
                              "backend (its settings: ")
    good = {key: value for key, value in settings.items() if key != typo}
    for key in good:
        assert key in message.split("its settings: ")[1]
    assert _build(backend, good) is not None  # the same entry without the typo is fine


def test_the_shared_keys_are_not_a_backends_problem() -> None:
    backend = SmtpDelivery.from_settings(
        {"backend": "smtp", "host": "mail.example.com",
         "join_url_template": "https://meet.example.com/{meeting_id}"}, {})
    assert backend.host == "mail.example.com"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(EwsSettingsInvalid) as caught:
        EwsDelivery.from_settings({"username": "", "password_env": "FT_EWS",
                                   "auth_type": "kerberos"}, ENV, organizer="ft@contoso.com")

    message = str(caught.value)
    for field in ("delivery.service_endpoint: Field required",
                  "delivery.username: String should have at least 1 character",
                  "delivery.auth_type: Input should be 'NTLM' or 'basic'"):
        assert field in message


def test_graph_refuses_a_join_url_template() -> None:
    with pytest.raises(GraphSettingsInvalid, match=r"delivery\.join_url_template: Graph makes"):
        GraphDelivery.from_settings({**GRAPH, "join_url_template": "https://x/{meeting_id}"},
                                    ENV, organizer="ft@contoso.com")


@pytest.mark.parametrize(("env", "state"), [({}, "is not set"), ({"FT_PW": ""}, "is empty")])
def test_a_secret_must_be_set_and_not_empty(env: dict[str, str], state: str) -> None:
    with pytest.raises(DeliverySettingsInvalid,
                       match=f"smtp: delivery.password_env: environment variable 'FT_PW' {state}"):
        secret_from(env, "FT_PW", "smtp", "password_env")
    assert secret_from({"FT_PW": "pw"}, "FT_PW", "smtp", "password_env") == "pw"
    assert secret_from({}, None, "smtp", "password_env") is None


def _directory_with(delivery: Delivery) -> CenterDirectory:
    first, *others = default_directory().centers
    return CenterDirectory(centers=(first.model_copy(update={"delivery": delivery}), *others))


def test_the_outbox_takes_no_settings_of_its_own(tmp_path: Path) -> None:
    directory = _directory_with(Delivery.model_validate({"backend": "outbox", "folder": "/srv"}))
    center = directory.centers[0].id

    with pytest.raises(DeliveryUnavailable,
                       match=f"^center {center}: outbox: delivery.folder: the outbox backend "
                             "takes no settings of its own$"):
        build_deliveries(directory, tmp_path, {})


def test_the_default_directory_and_a_join_url_template_build(tmp_path: Path) -> None:
    directory = _directory_with(Delivery.model_validate(
        {"backend": "outbox", "join_url_template": "https://meet.example.com/{meeting_id}"}))

    backends = build_deliveries(directory, tmp_path, {})

    assert set(backends) == {center.id for center in directory.centers}


def test_a_center_given_another_backend_keeps_its_own_earlier_one(tmp_path: Path) -> None:
    def smtp(host: str) -> Delivery:
        return Delivery.model_validate({"backend": "smtp", "host": host})
    first, second, *others = default_directory().centers
    directory = CenterDirectory(centers=(
        first.model_copy(update={"delivery": smtp("a.example.com")}),
        second.model_copy(update={"delivery": smtp("b.example.com")}), *others))
    deliveries = CenterDeliveries(lambda: directory, tmp_path, {})
    deliveries.prepare(directory)

    deliveries.prepare(CenterDirectory(centers=(  # the first center back on the outbox
        first, second.model_copy(update={"delivery": smtp("b.example.com")}), *others)))

    assert deliveries(first.id).name == "outbox"
    earlier = deliveries.earlier(first.id, "smtp")
    assert isinstance(earlier, SmtpDelivery) and earlier.host == "a.example.com"
    assert deliveries.earlier(second.id, "smtp") is None  # unchanged: no earlier backend
    assert deliveries.earlier(first.id, "graph") is None


def test_a_refused_reload_changes_no_backend(tmp_path: Path) -> None:
    first, *others = default_directory().centers
    directory = CenterDirectory(centers=(first, *others))
    deliveries = CenterDeliveries(lambda: directory, tmp_path, {})
    deliveries.prepare(directory)
    outbox = deliveries(first.id)

    with pytest.raises(DeliveryUnavailable, match=r"delivery\.host: Field required"):
        deliveries.prepare(CenterDirectory(centers=(
            others[0].model_copy(update={"delivery": Delivery(backend="outbox")}),
            first.model_copy(update={"delivery": Delivery(backend="smtp")}), *others[1:])))

    assert deliveries(first.id) is outbox
    assert deliveries.earlier(first.id, "outbox") is None
