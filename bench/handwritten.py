"""The shipped mappings written by hand in plain Python: the yardstick for the interpreter.

bench_mapping.py first asserts that this function and ``map_records`` with mappings/ give the
same payloads (and fail the same records), then times both. It is what a developer would write
without the DSL: one loop per casavi kind, dict lookups for joins and references, the same
helper functions (ref_id, join_nonempty, valid_email, active, unique) from engine.functions.

Semantics follow docs/dsl.md exactly as the interpreter does: records sorted by id, tombstones
ignored, per-record failures collected, dependants of failed records failing too, contacts sent
only when a sent contract or responsibility refers to them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

from engine.functions import RUN_DATE, FunctionError, active, join_nonempty, ref_id, unique, valid_email

Payloads = dict[str, dict[str, dict[str, Any]]]
Failed = set[tuple[str, str]]

SALUTATION = {"HERR": "MR", "FRAU": "MRS", "DIVERS": "DIVERSE"}
USAGE = {"APARTMENT": "PRIVATE", "PARKING": "PRIVATE", "CELLAR": "PRIVATE", "OTHER": "PRIVATE",
         "COMMERCIAL": "COMMERCIAL"}
ROLE = {"ADVISORY_BOARD_CHAIR": "Beiratsvorsitz", "ADVISORY_BOARD_MEMBER": "Beirat", "CARETAKER": "Hausmeister"}


def _empty(v: Any) -> bool:
    return v is None or v == ""


def _live(records: Mapping[str, Iterable[dict[str, Any]]], resource: str) -> list[dict[str, Any]]:
    return sorted((r for r in records.get(resource, ()) if r.get("deleted") is not True), key=itemgetter("id"))


def map_by_hand(records: Mapping[str, Iterable[dict[str, Any]]], run_date: dt.date) -> tuple[Payloads, Failed]:
    token = RUN_DATE.set(run_date)
    try:
        return _map(records)
    finally:
        RUN_DATE.reset(token)


def _map(records: Mapping[str, Iterable[dict[str, Any]]]) -> tuple[Payloads, Failed]:
    failed: Failed = set()
    buildings = _live(records, "buildings")
    building_by_id: dict[str, dict[str, Any]] = {}
    buildings_by_property: dict[str, list[dict[str, Any]]] = {}
    for b in buildings:
        building_by_id.setdefault(b["id"], b)
        buildings_by_property.setdefault(b["propertyId"], []).append(b)

    # properties
    properties: dict[str, dict[str, Any]] = {}
    property_ids: dict[str, str] = {}
    for p in _live(records, "properties"):
        rid = ref_id("p", p["id"])
        bs = buildings_by_property.get(p["id"], [])
        first = bs[0] if bs else {}
        payload = {
            "name": p.get("name"), "number": p.get("number"),
            "postalCode": first.get("postalCode"), "city": first.get("city"), "country": first.get("country"),
            "addresses": unique([{"street": join_nonempty(" ", [b.get("street"), b.get("houseNumber")])}
                                 for b in bs]),
            "customFields": {"verwaltungsart": p.get("kind"), "meaGesamt": p.get("meaTotal"),
                             "verwaltetSeit": p.get("managedFrom"), "verwaltetBis": p.get("managedUntil")},
        }
        if _empty(payload["name"]):
            failed.add(("properties", p["id"]))
            continue
        properties[rid] = payload
        property_ids[p["id"]] = rid

    # units
    units: dict[str, dict[str, Any]] = {}
    unit_ids: dict[str, str] = {}
    for u in _live(records, "units"):
        building = building_by_id.get(u.get("buildingId"))  # type: ignore[arg-type]
        prop = property_ids.get(u.get("propertyId"))  # type: ignore[arg-type]
        usage = USAGE.get(u.get("type"))  # type: ignore[arg-type]
        name = join_nonempty(" ", [u.get("number"), u.get("label")])
        if building is None or prop is None or usage is None or _empty(name):
            failed.add(("units", u["id"]))
            continue
        rid = ref_id("u", u["id"])
        units[rid] = {
            "propertyId": prop, "name": name, "number": u.get("number"),
            "address": join_nonempty(" ", [building.get("street"), building.get("houseNumber")]),
            "usage": usage,
            "customFields": {"einheitentyp": u.get("type"), "eigentumsart": u.get("ownershipKind"),
                             "mea": u.get("mea"), "wohnflaeche": u.get("areaSqm"), "personen": u.get("persons"),
                             "etage": u.get("floor")},
        }
        unit_ids[u["id"]] = rid

    # contacts (kept below only if a sent contract or responsibility refers to them)
    contacts: dict[str, dict[str, Any]] = {}
    contact_ids: dict[str, str] = {}
    failed_contacts: set[str] = set()
    for c in _live(records, "contacts"):
        email = valid_email(c.get("email"))
        payload = {
            "salutation": SALUTATION.get(c.get("salutation")),  # type: ignore[arg-type]
            "title": c.get("title"), "firstName": c.get("firstName"), "lastName": c.get("lastName"),
            "companyName": c.get("companyName"), "email": email, "telephone": c.get("phone"),
            "mobile": c.get("mobile"), "street": join_nonempty(" ", [c.get("street"), c.get("houseNumber")]),
            "postalCode": c.get("postalCode"), "city": c.get("city"), "country": c.get("country"),
            "preferredWayOfContact": "ONLINE" if email else "POSTAL",
        }
        if _empty(payload["lastName"]) and _empty(payload["companyName"]):
            failed_contacts.add(c["id"])
            continue
        rid = ref_id("c", c["id"])
        contacts[rid] = payload
        contact_ids[c["id"]] = rid

    referred: set[str] = set()      # contact reference ids used by sent records
    attempted: set[str] = set()     # SCALARA contact ids any contract/responsibility pointed at

    # contracts
    contracts: dict[str, dict[str, Any]] = {}
    for o in _live(records, "ownerships"):
        for owner in o.get("ownerContactIds") or []:
            if owner is None:
                failed.add(("ownerships", o["id"]))
                continue
            rid = ref_id("own", o["id"], owner)
            attempted.add(owner)
            contact = contact_ids.get(owner)
            unit = unit_ids.get(o.get("unitId"))  # type: ignore[arg-type]
            if contact is None or unit is None or o.get("validFrom") is None:
                failed.add(("ownerships", o["id"]))
                continue
            contracts[rid] = {"type": "OWNER", "contactId": contact, "unitId": unit, "startDate": o["validFrom"],
                              "endDate": o.get("validTo"), "contractNumber": None}
            referred.add(contact)
    for us in _live(records, "usages"):
        if us.get("type") != "RENTAL":
            continue
        for unit_id in us.get("unitIds") or []:
            for tenant in us.get("tenantContactIds") or []:
                try:
                    rid = ref_id("rent", us["id"], unit_id, tenant)
                except FunctionError:
                    failed.add(("usages", us["id"]))
                    continue
                attempted.add(tenant)
                contact = contact_ids.get(tenant)
                unit = unit_ids.get(unit_id)
                if contact is None or unit is None or us.get("startDate") is None:
                    failed.add(("usages", us["id"]))
                    continue
                contracts[rid] = {"type": "RENTER", "contactId": contact, "unitId": unit,
                                  "startDate": us["startDate"], "endDate": us.get("endDate"),
                                  "contractNumber": us.get("contractNumber")}
                referred.add(contact)

    # responsibilities (current roles only)
    responsibilities: dict[str, dict[str, Any]] = {}
    for r in _live(records, "property-roles"):
        if not active(r.get("validFrom"), r.get("validTo")):
            continue
        if r.get("propertyId") is None or r.get("contactId") is None:
            failed.add(("property-roles", r["id"]))
            continue
        rid = ref_id("resp", r["propertyId"], r["contactId"])
        attempted.add(r["contactId"])
        prop = property_ids.get(r["propertyId"])
        contact = contact_ids.get(r["contactId"])
        role = r.get("role")
        if role == "SERVICE_PROVIDER":
            st = r.get("serviceType")
            role_name: str | None = f"Dienstleister ({st})" if st else "Dienstleister"
        else:
            role_name = ROLE.get(role)  # type: ignore[arg-type]
        if prop is None or contact is None or role_name is None or rid in responsibilities:
            failed.add(("property-roles", r["id"]))
            continue
        responsibilities[rid] = {"propertyId": prop, "contactId": contact, "roleName": role_name,
                                 "roleType": "EXTERNAL",
                                 "showInPortal": role in ("ADVISORY_BOARD_CHAIR", "ADVISORY_BOARD_MEMBER")}
        referred.add(contact)

    sent_contacts = {rid: payload for rid, payload in contacts.items() if rid in referred}
    failed.update(("contacts", cid) for cid in failed_contacts if cid in attempted)
    return ({"properties": properties, "units": units, "contacts": sent_contacts, "contracts": contracts,
             "responsibilities": responsibilities}, failed)
