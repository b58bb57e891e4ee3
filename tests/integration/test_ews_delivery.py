"""EWS delivery at the HTTP layer: exchangelib's SOAP requests answered by a fake Exchange 2016.

``responses`` intercepts the POSTs to the EWS endpoint. The fake reads each SOAP request, keeps
the organizer's calendar, and answers with the response shapes Exchange sends (GetFolder,
FindItem, CreateItem, UpdateItem, CancelCalendarItem, GetServerTimeZones, GetUserAvailability,
SOAP faults). The tests assert on the SOAP bodies that were sent.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
import requests
import responses

from scheduler.delivery import DeliveryFailed, Invite, Method
from scheduler.directory import Center
from scheduler.ews_delivery import EwsDelivery, EwsSettingsInvalid
from scheduler.invites import build_imip_message, build_invite
from schemas.events import Meeting
from schemas.help_request import HelpRequest

ENDPOINT = "https://mail.contoso.example/EWS/Exchange.asmx"
ORGANIZER = "fasttrack.dublin@example.com"
UID = "3a9e5f7c-1d2b-4e8f-9c0a-6b5d4e3f2a19@fasttrack.example.com"
NOW = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
START = datetime(2026, 3, 30, 9, 0, tzinfo=UTC)  # 10:00 Irish summer time (IST, UTC+1)
JOIN_URL = "https://meet.contoso.example/fasttrack/3a9e5f7c"
NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/",
      "m": "http://schemas.microsoft.com/exchange/services/2006/messages",
      "t": "http://schemas.microsoft.com/exchange/services/2006/types"}


# -- builders -----------------------------------------------------------------------------------


def make_center() -> Center:
    return Center.model_validate({
        "id": "dublin", "name": "FastTrack Center Dublin", "region": "EMEA",
        "timezone": "Europe/Dublin", "country": "IE", "languages": ["en", "fr", "de"],
        "hours": {"mon": ["09:00-17:00"]}, "mailbox": ORGANIZER,
        "delivery": {"backend": "ews", "service_endpoint": ENDPOINT},
        "specialists": [{"id": "dub-01", "name": "Aoife Byrne", "email": "aoife.byrne@example.com",
                         "languages": ["en", "de"]}],
    })


def make_request() -> HelpRequest:
    return HelpRequest.model_validate({
        "request_id": "req-0077", "submitted_at": "2026-02-27T08:00:00Z", "source": "admin_center",
        "tenant": {"id": "tenant-1", "name": "Contoso GmbH", "country": "DE"},
        "requester": {"name": "Jana Weber", "email": "jana.weber@contoso.example",
                      "language": "de"},
        "topic": "data_migration",
    })


def make_invite(sequence: int = 0, method: Method = "REQUEST", *,
                start: datetime = START) -> Invite:
    center, request = make_center(), make_request()
    meeting = Meeting(request_id=request.request_id, center_id=center.id, specialist_id="dub-01",
                      language="de", start=start, end=start + timedelta(hours=1),
                      revision=sequence + 1, uid=UID, join_url=JOIN_URL)
    ics = build_invite(meeting, request, center, sequence=sequence, method=method, now=NOW)
    email = build_imip_message(ics, meeting, request, center, method=method, now=NOW)
    return Invite(meeting=meeting, request=request, center=center, sequence=sequence,
                  method=method, ics=ics, email=email)


# -- the fake Exchange --------------------------------------------------------------------------

ENVELOPE = """<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>
<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507"
 MinorBuildNumber="6" Version="V2017_07_11"
 xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types"
 xmlns="http://schemas.microsoft.com/exchange/services/2006/types"/></s:Header>
<s:Body>{body}</s:Body></s:Envelope>"""
MESSAGES = ('xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
            'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"')


def response(operation: str, inner: str) -> str:
    return ENVELOPE.format(body=(
        f"<m:{operation}Response {MESSAGES}><m:ResponseMessages>"
        f'<m:{operation}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
        f"</m:ResponseCode>{inner}</m:{operation}ResponseMessage></m:ResponseMessages>"
        f"</m:{operation}Response>"))


def soap_fault(code: str, message: str, back_off_ms: int) -> str:
    return ENVELOPE.format(body=(
        '<s:Fault><faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">'
        f'a:{code}</faultcode><faultstring xml:lang="en-US">{message}</faultstring><detail>'
        '<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        f"{code}</e:ResponseCode>"
        '<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        f"{message}</e:Message>"
        '<t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
        f'<t:Value Name="BackOffMilliseconds">{back_off_ms}</t:Value></t:MessageXml>'
        "</detail></s:Fault>"))


def folder(kind: str, folder_id: str, name: str, distinguished: str) -> str:
    return (f'<m:Folders><t:{kind}><t:FolderId Id="{folder_id}" ChangeKey="AQAAABYAAAA="/>'
            f"<t:DisplayName>{name}</t:DisplayName><t:TotalCount>0</t:TotalCount>"
            f"<t:ChildFolderCount>0</t:ChildFolderCount>"
            f"<t:DistinguishedFolderId>{distinguished}</t:DistinguishedFolderId>"
            f"</t:{kind}></m:Folders>")


def extended(name: str, kind: str, value: Any) -> str:
    return (f'<t:ExtendedProperty><t:ExtendedFieldURI DistinguishedPropertySetId="PublicStrings" '
            f'PropertyName="{name}" PropertyType="{kind}"/><t:Value>{value}</t:Value>'
            f"</t:ExtendedProperty>")


@dataclass
class FakeExchange:
    """The organizer's calendar on an Exchange 2016 server, one SOAP operation at a time."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: list[tuple[str, ElementTree.Element]] = field(default_factory=list)
    availability: str = ""
    busy_once: bool = False

    def __call__(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
        operation = ElementTree.fromstring(body).find("s:Body", NS)[0]  # type: ignore[index]
        name = operation.tag.rpartition("}")[2]
        self.sent.append((name, operation))
        if self.busy_once:
            self.busy_once = False
            return 500, {"Content-Type": "text/xml; charset=utf-8"}, soap_fault(
                "ErrorServerBusy", "The server cannot service this request right now. "
                "Try again later.", 29774)
        return 200, {"Content-Type": "text/xml; charset=utf-8"}, getattr(self, name)(operation)

    def operations(self, name: str) -> list[ElementTree.Element]:
        return [op for sent, op in self.sent if sent == name]

    def GetFolder(self, operation: ElementTree.Element) -> str:
        wanted = operation.find(".//t:DistinguishedFolderId", NS).get("Id")  # type: ignore[union-attr]
        if wanted == "calendar":
            return response("GetFolder", folder("CalendarFolder", "AAMkCAL=", "Kalender",
                                                "calendar"))
        return response("GetFolder", folder("Folder", "AAMkROOT=", "Root", "root"))

    def FindItem(self, operation: ElementTree.Element) -> str:
        wanted = operation.find(".//m:Restriction//t:Constant", NS).get("Value")  # type: ignore[union-attr]
        found = "".join(
            f'<t:CalendarItem><t:ItemId Id="{item_id}" ChangeKey="{item["changekey"]}"/>'
            f"</t:CalendarItem>"
            for item_id, item in self.items.items() if item["uid"] == wanted)
        count = found.count("<t:CalendarItem>")
        return response("FindItem", (
            f'<m:RootFolder IndexedPagingOffset="{count}" TotalItemsInView="{count}" '
            f'IncludesLastItemInRange="true"><t:Items>{found}</t:Items></m:RootFolder>'))

    def GetItem(self, operation: ElementTree.Element) -> str:
        found = ""
        for item_id in operation.iterfind("m:ItemIds/t:ItemId", NS):
            item = self.items[str(item_id.get("Id"))]
            found += (
                f'<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
                f'</m:ResponseCode><m:Items><t:CalendarItem><t:ItemId Id="{item_id.get("Id")}" '
                f'ChangeKey="{item["changekey"]}"/>'
                f"{extended('FastTrackSequence', 'Integer', item['sequence'])}"
                f"<t:IsCancelled>{str(item['cancelled']).lower()}</t:IsCancelled>"
                f"</t:CalendarItem></m:Items></m:GetItemResponseMessage>")
        return ENVELOPE.format(body=f"<m:GetItemResponse {MESSAGES}><m:ResponseMessages>"
                                    f"{found}</m:ResponseMessages></m:GetItemResponse>")

    def CreateItem(self, operation: ElementTree.Element) -> str:
        cancel = operation.find(".//t:CancelCalendarItem", NS)
        if cancel is not None:
            item_id = cancel.find("t:ReferenceItemId", NS).get("Id")  # type: ignore[union-attr]
            self.items[str(item_id)]["cancelled"] = True
            return response("CreateItem", "<m:Items/>")
        item = operation.find(".//t:CalendarItem", NS)
        assert item is not None
        item_id = f"AAMkADk0ZTU3ZmQ0LWI2NjYtNDdlZC1iMmQ1LWE4YjNiZGE3NjA{len(self.items) + 1}AAA="
        self.items[item_id] = {
            "uid": _extended_value(item, "FastTrackUid"), "changekey": "DwAAABYAAAA1",
            "sequence": int(_extended_value(item, "FastTrackSequence")), "cancelled": False}
        return response("CreateItem", (
            f'<m:Items><t:CalendarItem><t:ItemId Id="{item_id}" ChangeKey="DwAAABYAAAA1"/>'
            f"</t:CalendarItem></m:Items>"))

    def UpdateItem(self, operation: ElementTree.Element) -> str:
        item_id = str(operation.find(".//t:ItemId", NS).get("Id"))  # type: ignore[union-attr]
        item = self.items[item_id]
        for update in operation.iterfind(".//t:SetItemField", NS):
            if update.find("t:ExtendedFieldURI[@PropertyName='FastTrackSequence']", NS) is not None:
                item["sequence"] = int(_extended_value(update, "FastTrackSequence"))
        item["changekey"] = "DwAAABYAAAA2"
        return response("UpdateItem", (
            f'<m:Items><t:CalendarItem><t:ItemId Id="{item_id}" ChangeKey="DwAAABYAAAA2"/>'
            f'</t:CalendarItem></m:Items><m:ConflictResults><t:Count>0</t:Count>'
            f"</m:ConflictResults>"))

    def GetServerTimeZones(self, operation: ElementTree.Element) -> str:
        return response("GetServerTimeZones", (
            '<m:TimeZoneDefinitions><t:TimeZoneDefinition Name="(UTC) Coordinated Universal Time"'
            ' Id="UTC"><t:Periods><t:Period Bias="PT0M" Name="Standard" Id="trule:Microsoft/'
            'Registry/UTC/1-Standard"/></t:Periods><t:TransitionsGroups><t:TransitionsGroup '
            'Id="0"><t:Transition><t:To Kind="Period">trule:Microsoft/Registry/UTC/1-Standard'
            "</t:To></t:Transition></t:TransitionsGroup></t:TransitionsGroups><t:Transitions>"
            '<t:Transition><t:To Kind="Group">0</t:To></t:Transition></t:Transitions>'
            "</t:TimeZoneDefinition></m:TimeZoneDefinitions>"))

    def GetUserAvailabilityRequest(self, operation: ElementTree.Element) -> str:
        return ENVELOPE.format(body=(
            f"<GetUserAvailabilityResponse "
            f'xmlns="http://schemas.microsoft.com/exchange/services/2006/messages">'
            f"<FreeBusyResponseArray>{self.availability}</FreeBusyResponseArray>"
            f"</GetUserAvailabilityResponse>"))


def _extended_value(element: ElementTree.Element, name: str) -> str:
    for prop in element.iterfind(".//t:ExtendedProperty", NS):
        uri = prop.find("t:ExtendedFieldURI", NS)
        if uri is not None and uri.get("PropertyName") == name:
            return str(prop.findtext("t:Value", namespaces=NS))
    raise AssertionError(f"no extended property {name}")


def text(element: ElementTree.Element, path: str) -> str | None:
    return element.findtext(path, namespaces=NS)


def instant(value: str | None) -> datetime:
    return datetime.fromisoformat(str(value)).astimezone(UTC)


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    fake = FakeExchange()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, ENDPOINT, callback=fake)
        yield fake


@pytest.fixture
def delivery() -> EwsDelivery:
    return EwsDelivery(ENDPOINT, "CONTOSO\\svc-fasttrack", "pa55word", organizer=ORGANIZER)


# -- create -------------------------------------------------------------------------------------


def test_a_new_meeting_is_created_and_exchange_sends_the_invitations(
        exchange: FakeExchange, delivery: EwsDelivery) -> None:
    receipt = delivery.send(make_invite())

    (create,) = exchange.operations("CreateItem")
    assert create.get("SendMeetingInvitations") == "SendToAllAndSaveCopy"
    assert create.get("MessageDisposition") == "SaveOnly"
    item = create.find(".//t:CalendarItem", NS)
    assert item is not None
    assert text(item, "t:Subject") == "Microsoft 365 FastTrack: Datenmigration"
    assert text(item, "t:Body") is not None and "Jana Weber" in str(text(item, "t:Body"))
    assert item.find("t:Body", NS).get("BodyType") == "HTML"  # type: ignore[union-attr]
    assert text(item, "t:UID") == UID
    assert _extended_value(item, "FastTrackUid") == UID
    assert _extended_value(item, "FastTrackSequence") == "0"
    assert text(item, "t:Start") == "2026-03-30T10:00:00+01:00"  # Irish summer time
    assert instant(text(item, "t:Start")) == START
    assert instant(text(item, "t:End")) == START + timedelta(hours=1)
    assert item.find("t:StartTimeZone", NS).get("Id") == "GMT Standard Time"  # type: ignore[union-attr]
    assert text(item, "t:Location") == JOIN_URL
    assert [text(a, "t:Mailbox/t:EmailAddress") for a in
            item.iterfind("t:RequiredAttendees/t:Attendee", NS)] == [
        "jana.weber@contoso.example", "aoife.byrne@example.com"]
    assert receipt.external_id in exchange.items
    assert receipt.join_url == JOIN_URL and receipt.location == ENDPOINT


def test_the_lookup_searches_the_calendar_by_uid(exchange: FakeExchange,
                                                 delivery: EwsDelivery) -> None:
    delivery.send(make_invite())

    (find,) = exchange.operations("FindItem")
    folder_id = find.find("m:ParentFolderIds/t:DistinguishedFolderId", NS)
    assert folder_id is not None and folder_id.get("Id") == "calendar"
    assert text(folder_id, "t:Mailbox/t:EmailAddress") == ORGANIZER
    restriction = find.find("m:Restriction/t:IsEqualTo", NS)
    assert restriction is not None
    uri = restriction.find("t:ExtendedFieldURI", NS)
    assert uri is not None and uri.get("PropertyName") == "FastTrackUid"
    assert restriction.find(".//t:Constant", NS).get("Value") == UID  # type: ignore[union-attr]


def test_the_same_invite_again_creates_nothing(exchange: FakeExchange,
                                              delivery: EwsDelivery) -> None:
    first = delivery.send(make_invite())
    again = delivery.send(make_invite())

    assert len(exchange.operations("CreateItem")) == 1
    assert exchange.operations("UpdateItem") == []
    assert again.external_id == first.external_id


# -- update and cancel --------------------------------------------------------------------------


def test_a_change_updates_the_item_and_sends_the_update(exchange: FakeExchange,
                                                       delivery: EwsDelivery) -> None:
    created = delivery.send(make_invite())

    delivery.send(make_invite(1, start=START + timedelta(days=1, hours=2)))

    (update,) = exchange.operations("UpdateItem")
    assert update.get("SendMeetingInvitationsOrCancellations") == "SendToAllAndSaveCopy"
    assert update.find(".//t:ItemId", NS).get("Id") == created.external_id  # type: ignore[union-attr]
    fields = {uri.get("FieldURI") or uri.get("PropertyName")
              for uri in update.iterfind(".//t:SetItemField/*[1]", NS)}
    assert {"item:Subject", "item:Body", "calendar:Start", "calendar:End",
            "calendar:RequiredAttendees", "FastTrackSequence"} <= fields
    starts = [instant(text(f, ".//t:Start")) for f in update.iterfind(".//t:SetItemField", NS)
              if text(f, ".//t:Start")]
    assert starts == [START + timedelta(days=1, hours=2)]
    assert len(exchange.items) == 1
    assert next(iter(exchange.items.values()))["sequence"] == 1


def test_an_older_change_arriving_late_is_ignored(exchange: FakeExchange,
                                                 delivery: EwsDelivery) -> None:
    delivery.send(make_invite())
    delivery.send(make_invite(2, start=START + timedelta(days=2)))

    delivery.send(make_invite(1, start=START + timedelta(days=1)))

    assert len(exchange.operations("UpdateItem")) == 1


def test_cancel_cancels_the_item_with_a_note_in_the_requesters_language(
        exchange: FakeExchange, delivery: EwsDelivery) -> None:
    created = delivery.send(make_invite())

    delivery.send(make_invite(1, "CANCEL"))
    delivery.send(make_invite(1, "CANCEL"))

    cancels = [op for op in exchange.operations("CreateItem")
               if op.find(".//t:CancelCalendarItem", NS) is not None]
    assert len(cancels) == 1
    (cancel,) = cancels
    reference = cancel.find(".//t:CancelCalendarItem/t:ReferenceItemId", NS)
    assert reference is not None and reference.get("Id") == created.external_id
    assert "abgesagt" in str(text(cancel, ".//t:NewBodyContent"))


def test_cancelling_a_meeting_exchange_never_had_sends_nothing(
        exchange: FakeExchange, delivery: EwsDelivery) -> None:
    receipt = delivery.send(make_invite(1, "CANCEL"))

    assert exchange.operations("CreateItem") == []
    assert receipt.external_id is None


# -- errors -------------------------------------------------------------------------------------


def test_a_busy_server_is_a_transient_failure(exchange: FakeExchange,
                                             delivery: EwsDelivery) -> None:
    exchange.busy_once = True

    with pytest.raises(DeliveryFailed) as failed:
        delivery.send(make_invite())

    assert failed.value.transient is True
    assert "ErrorServerBusy" in str(failed.value)


def test_an_unreachable_server_is_a_transient_failure(delivery: EwsDelivery) -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, ENDPOINT, body=requests.ConnectionError("connection refused"))
        with pytest.raises(DeliveryFailed) as failed:
            delivery.send(make_invite())

    assert failed.value.transient is True


def test_an_access_denied_is_a_permanent_failure(delivery: EwsDelivery) -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, ENDPOINT, content_type="text/xml; charset=utf-8",
                 body=response("GetFolder", "").replace(
                     'ResponseClass="Success"><m:ResponseCode>NoError',
                     'ResponseClass="Error"><m:MessageText>Access is denied. Check credentials '
                     "and try again.</m:MessageText><m:ResponseCode>ErrorAccessDenied")
                 .replace("</m:ResponseCode>", "</m:ResponseCode><m:DescriptiveLinkKey>0"
                          "</m:DescriptiveLinkKey>", 1))
        with pytest.raises(DeliveryFailed) as failed:
            delivery.send(make_invite())

    assert failed.value.transient is False


# -- free/busy ----------------------------------------------------------------------------------


def view(*events: tuple[str, str, str]) -> str:
    items = "".join(
        f"<CalendarEvent><StartTime>{start}</StartTime><EndTime>{end}</EndTime>"
        f"<BusyType>{busy_type}</BusyType></CalendarEvent>" for start, end, busy_type in events)
    return (
        '<FreeBusyResponse><ResponseMessage ResponseClass="Success"><ResponseCode>NoError'
        "</ResponseCode></ResponseMessage><FreeBusyView><FreeBusyViewType "
        'xmlns="http://schemas.microsoft.com/exchange/services/2006/types">FreeBusy'
        '</FreeBusyViewType><CalendarEventArray xmlns="http://schemas.microsoft.com/exchange/'
        f'services/2006/types">{items}</CalendarEventArray></FreeBusyView></FreeBusyResponse>')


def test_busy_merges_blocking_events_in_utc(exchange: FakeExchange,
                                            delivery: EwsDelivery) -> None:
    # Times come back in the zone of the request (UTC); Ireland changes clocks on 2026-03-29.
    exchange.availability = view(
        ("2026-03-29T00:30:00", "2026-03-29T01:30:00", "Busy"),
        ("2026-03-29T01:00:00", "2026-03-29T02:00:00", "OOF"),
        ("2026-03-29T05:00:00", "2026-03-29T06:00:00", "Free"),
        ("2026-03-30T08:00:00", "2026-03-30T09:00:00", "Tentative"),
    ) + view()
    start = datetime(2026, 3, 29, 0, 0, tzinfo=make_center().zone)

    busy = delivery.busy(["aoife.byrne@example.com", "sean@example.com"], start,
                         start + timedelta(days=2))

    assert busy == {
        "aoife.byrne@example.com": [
            (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2026, 3, 29, 2, 0, tzinfo=UTC)),
            (datetime(2026, 3, 30, 8, 0, tzinfo=UTC), datetime(2026, 3, 30, 9, 0, tzinfo=UTC)),
        ],
        "sean@example.com": [],
    }
    (request,) = exchange.operations("GetUserAvailabilityRequest")
    assert [text(m, "t:Email/t:Address") for m in
            request.iterfind("m:MailboxDataArray/t:MailboxData", NS)] == [
        "aoife.byrne@example.com", "sean@example.com"]
    window = request.find("t:FreeBusyViewOptions/t:TimeWindow", NS)
    assert window is not None
    assert re.match(r"2026-03-29T00:00:00", str(text(window, "t:StartTime")))


# -- settings -----------------------------------------------------------------------------------

SETTINGS = {"service_endpoint": ENDPOINT, "username": "CONTOSO\\svc", "password_env": "FT_EWS"}


def test_from_settings_reads_the_password_from_the_named_variable() -> None:
    delivery = EwsDelivery.from_settings({**SETTINGS, "auth_type": "basic"}, {"FT_EWS": "pw"},
                                         organizer=ORGANIZER)
    assert delivery.service_endpoint == ENDPOINT
    assert delivery.account.protocol.credentials.password == "pw"


@pytest.mark.parametrize(("settings", "env", "message"), [
    pytest.param({**SETTINGS, "service_endpoint": ""}, {"FT_EWS": "x"},
                 "delivery.service_endpoint", id="no-endpoint"),
    pytest.param(SETTINGS, {}, "'FT_EWS' is not set", id="password-unset"),
    pytest.param({**SETTINGS, "auth_type": "kerberos"}, {"FT_EWS": "x"}, "delivery.auth_type",
                 id="unsupported-auth"),
])
def test_from_settings_names_what_is_wrong(settings: dict[str, str], env: dict[str, str],
                                           message: str) -> None:
    with pytest.raises(EwsSettingsInvalid, match=message):
        EwsDelivery.from_settings(settings, env, organizer=ORGANIZER)


def test_a_cancel_for_the_specialist_alone_is_refused_exchange_tells_them_itself(
        exchange: FakeExchange, delivery: EwsDelivery) -> None:
    assert delivery.tells_removed_attendees
    alone = dataclasses.replace(make_invite(1, "CANCEL"), only_specialist=True)

    with pytest.raises(DeliveryFailed) as refused:
        delivery.send(alone)

    assert not refused.value.transient
    assert exchange.sent == []
