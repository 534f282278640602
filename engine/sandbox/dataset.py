"""The SCALARA data set's shape: its resources, API.md section 1's field table, the names of the
planted edge cases, and ``Dataset`` (what ``engine.sandbox.generator.generate`` returns).

Split from the generator so the shape can be read (by the sandbox's validation, the tests) without
the generator's code, and both modules stay focused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

Record = dict[str, Any]

RESOURCES: tuple[str, ...] = (
    "properties", "buildings", "units", "contacts", "ownerships", "usages", "property-roles",
)

# The field table of API.md section 1: one place for the generator, the sandbox's validation of
# mutations and the tests. Types: uuid, string, date, timestamp, number, integer, boolean,
# uuids (array of uuid), enum:A|B; a trailing "?" means nullable.
FIELDS: dict[str, dict[str, str]] = {
    "properties": {
        "id": "uuid", "number": "string?", "name": "string", "kind": "enum:WEG|MV|SEV",
        "meaTotal": "number?", "managedFrom": "date", "managedUntil": "date?",
        "relatedWegPropertyId": "uuid?", "updatedAt": "timestamp",
    },
    "buildings": {
        "id": "uuid", "propertyId": "uuid", "label": "string?", "street": "string",
        "houseNumber": "string", "postalCode": "string", "city": "string", "country": "string",
        "updatedAt": "timestamp",
    },
    "units": {
        "id": "uuid", "propertyId": "uuid", "buildingId": "uuid", "number": "string",
        "label": "string?", "type": "enum:APARTMENT|COMMERCIAL|PARKING|CELLAR|OTHER",
        "ownershipKind": "enum:WOHNEIGENTUM|TEILEIGENTUM?", "mea": "number?", "areaSqm": "number?",
        "persons": "integer?", "floor": "string?", "updatedAt": "timestamp",
    },
    "contacts": {
        "id": "uuid", "kind": "enum:PERSON|COMPANY", "salutation": "enum:HERR|FRAU|DIVERS?",
        "title": "string?", "firstName": "string?", "lastName": "string?", "companyName": "string?",
        "email": "string?", "phone": "string?", "mobile": "string?", "street": "string?",
        "houseNumber": "string?", "postalCode": "string?", "city": "string?", "country": "string?",
        "updatedAt": "timestamp",
    },
    "ownerships": {
        "id": "uuid", "unitId": "uuid", "ownerContactIds": "uuids", "validFrom": "date",
        "validTo": "date?", "updatedAt": "timestamp",
    },
    "usages": {
        "id": "uuid", "propertyId": "uuid", "unitIds": "uuids",
        "type": "enum:RENTAL|VACANCY|SELF_USE", "commercial": "boolean", "startDate": "date",
        "endDate": "date?", "tenantContactIds": "uuids", "contractNumber": "string?",
        "updatedAt": "timestamp",
    },
    "property-roles": {
        "id": "uuid", "propertyId": "uuid", "contactId": "uuid",
        "role": "enum:ADVISORY_BOARD_CHAIR|ADVISORY_BOARD_MEMBER|CARETAKER|SERVICE_PROVIDER",
        "serviceType": "string?", "validFrom": "date?", "validTo": "date?", "updatedAt": "timestamp",
    },
}

# Names of Dataset.edge_cases (each lists the ids that carry the case), documented in
# docs/sandbox-data.md.
EDGE_CASES: tuple[str, ...] = (
    "co_owners", "future_owner_change", "ended_tenancy", "lease_flat_and_parking", "vacancy",
    "self_use", "multi_role_contact", "no_email", "company", "umlauts", "mehrhausanlage",
    "weg_sev_twin", "unlinked_contact", "dangling_building", "deleted_building", "roles_all_kinds",
    "service_provider", "ended_role",
)


class Dataset(Mapping[str, dict[str, Record]]):
    """Resource name -> {id -> record}, plus tombstones and the index of planted edge cases.

    ``tombstones`` maps resource -> {id -> deletedAt timestamp} for records that were deleted in
    "SCALARA" (the sandbox serves them with ``includeDeleted=true``).
    """

    __slots__ = ("edge_cases", "records", "seed", "today", "tombstones")

    def __init__(self, records: dict[str, dict[str, Record]], tombstones: dict[str, dict[str, str]],
                 edge_cases: dict[str, list[str]], *, seed: int, today: dt.date) -> None:
        self.records = records
        self.tombstones = tombstones
        self.edge_cases = edge_cases
        self.seed = seed
        self.today = today

    def __getitem__(self, resource: str) -> dict[str, Record]:
        return self.records[resource]

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, int]:
        return {name: len(recs) for name, recs in self.records.items()}
