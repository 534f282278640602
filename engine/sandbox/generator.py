"""A deterministic, realistic SCALARA data set for the sandbox.

Why: the demo, cassette recording, benchmarks and fault tests all need master data that looks like
a German property manager's books -- WEG, MV and SEV properties, umlauts, co-owners, owner changes
already registered for next month, a unit whose building was deleted -- without ever touching real
people's data. ``generate(properties, seed, today=...)`` is a pure function of its arguments:
one ``random.Random(seed)`` drives everything (UUIDs included), so a test or a benchmark can
rebuild exactly the same books.

Every messy case of API.md section 1 is planted at every scale in a fixed "showcase": the first
property (a WEG Mehrhausanlage) and the second (the SEV twin of one of its flats); their ids are
listed in ``Dataset.edge_cases``. The remaining properties are random around these averages:
~25 units, ~40 contacts and ~35 ownerships + usages per property.

Records are plain JSON dicts; repeated strings (dates, street names, enum values) are shared
objects so that 2,000 properties stay small in memory.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid

from engine.sandbox.dataset import EDGE_CASES, FIELDS, RESOURCES, Dataset, Record
from engine.sandbox.names import (
    CITIES,
    FIRST_F,
    FIRST_M,
    LAST,
    MAIL_DOMAINS,
    STREETS,
    UNIT_PREFIX,
    area,
    ascii_fold,
    building_count,
    building_labels,
    caretaker_company,
    company_name,
    floor,
    mobile,
    phone,
    provider,
    size_plan,
    unit_label,
    unit_mix,
)

__all__ = ["EDGE_CASES", "FIELDS", "RESOURCES", "Dataset", "Record", "generate"]


def generate(properties: int, seed: int, *, today: dt.date) -> Dataset:
    """Build the data set: ``properties`` properties (at least 2: the WEG/SEV showcase pair)."""
    if properties < 1:
        raise ValueError("properties must be at least 1")
    return _Generator(seed, today).run(properties)


# --------------------------------------------------------------------------------------------
# the generator


class _Prop:
    """Bookkeeping for one property while it is being generated (not part of the output)."""

    __slots__ = ("buildings", "id", "kind", "owners", "record", "units")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.id: str = record["id"]
        self.kind: str = record["kind"]
        self.buildings: list[Record] = []
        self.units: list[Record] = []
        self.owners: list[list[str]] = []      # owner groups of this property (contact id lists)


class _Generator:
    def __init__(self, seed: int, today: dt.date) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.today = today
        self.midnight = dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)
        self.records: dict[str, dict[str, Record]] = {name: {} for name in RESOURCES}
        self.tombstones: dict[str, dict[str, str]] = {name: {} for name in RESOURCES}
        self.edge: dict[str, list[str]] = {name: [] for name in EDGE_CASES}
        self.strings: dict[str, str] = {}
        self.providers: list[tuple[str, str]] = []   # (contact id, serviceType), shared by properties
        self.owner_of: dict[str, list[str]] = {}      # unit id -> owners of its open ownership
        self.contract_seq = 0
        self.mails: set[str] = set()                  # e-mail addresses given out (one per contact)

    # -- small helpers ------------------------------------------------------------------------

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def s(self, text: str) -> str:
        """One shared object per distinct string (dates, house numbers, unit numbers...)."""
        return self.strings.setdefault(text, text)

    def date(self, day: dt.date) -> str:
        return self.s(day.isoformat())

    def days_ago(self, low: int, high: int) -> dt.date:
        return self.today - dt.timedelta(days=self.rng.randint(low, high))

    def stamp(self, days_back: int = 730) -> str:
        moment = self.midnight - dt.timedelta(seconds=self.rng.randint(60, days_back * 86400),
                                              milliseconds=self.rng.randint(0, 999))
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def add(self, resource: str, record: Record) -> Record:
        record["updatedAt"] = self.stamp()
        self.records[resource][record["id"]] = record
        return record

    # -- contacts -----------------------------------------------------------------------------

    def address(self) -> tuple[str, str, str, str]:
        city, low, high = self.rng.choice(CITIES)
        return (self.rng.choice(STREETS), self.s(str(self.rng.randint(1, 140))),
                self.s(f"{self.rng.randint(low, high):05d}"), city)

    def person(self, *, last: str | None = None, first: str | None = None, female: bool | None = None,
               email: bool | None = None, home: tuple[str, str, str, str] | None = None,
               title: str | None = None) -> str:
        rng = self.rng
        female = rng.random() < 0.5 if female is None else female
        first = first or rng.choice(FIRST_F if female else FIRST_M)
        last = last or rng.choice(LAST)
        roll = rng.random()
        salutation = "DIVERS" if roll < 0.01 else None if roll < 0.03 else ("FRAU" if female else "HERR")
        if title is None and rng.random() < 0.08:
            title = "Prof. Dr." if rng.random() < 0.1 else "Dr."
        mail = None
        if (rng.random() < 0.75) if email is None else email:
            local = ascii_fold(f"{first}.{last}".replace(" ", "")).lower()
            if rng.random() < 0.3:
                local += str(rng.randint(1, 99))
            domain = rng.choice(MAIL_DOMAINS)
            mail = f"{local}@{domain}"
            while mail in self.mails:  # two people, one address: casavi would take them for one person
                mail = f"{local}{rng.randint(100, 9999)}@{domain}"
            self.mails.add(mail)
        street, number, postal, city = home or self.address()
        record_id = self.uid()
        self.add("contacts", {
            "id": record_id, "kind": "PERSON", "salutation": salutation, "title": title,
            "firstName": first, "lastName": last, "companyName": None, "email": mail,
            "phone": phone(rng) if rng.random() < 0.6 else None,
            "mobile": mobile(rng) if rng.random() < 0.55 else None,
            "street": street, "houseNumber": number, "postalCode": postal, "city": city,
            "country": "DE",
        })
        return record_id

    def company(self, name: str | None = None) -> str:
        rng = self.rng
        name = name or company_name(rng)
        street, number, postal, city = self.address()
        domain = ascii_fold(name.split()[0]).lower().strip(".-_") or "firma"
        record_id = self.uid()
        mail: str | None = f"info@{domain}.example.com" if rng.random() < 0.9 else None
        while mail is not None and mail in self.mails:
            mail = f"info{rng.randint(2, 999)}@{domain}.example.com"
        if mail is not None:
            self.mails.add(mail)
        self.add("contacts", {
            "id": record_id, "kind": "COMPANY", "salutation": None, "title": None,
            "firstName": None, "lastName": None, "companyName": name,
            "email": mail,
            "phone": phone(rng), "mobile": None, "street": street, "houseNumber": number,
            "postalCode": postal, "city": city, "country": "DE",
        })
        return record_id

    def owner_group(self, kind: str | None = None) -> list[str]:
        roll = self.rng.random()
        if kind == "company" or (kind is None and roll < 0.08):
            return [self.company()]
        if kind == "couple" or (kind is None and roll < 0.52):     # married, one last name
            last, home = self.rng.choice(LAST), self.address()
            return [self.person(last=last, female=False, home=home),
                    self.person(last=last, female=True, home=home)]
        if kind == "heirs" or (kind is None and roll < 0.58):      # Erbengemeinschaft
            last = self.rng.choice(LAST)
            return [self.person(last=last) for _ in range(3)]
        return [self.person()]

    def tenants(self, building: Record, count: int | None = None) -> list[str]:
        home = (building["street"], building["houseNumber"], building["postalCode"], building["city"])
        count = count or self.rng.choices((1, 2, 3), weights=(50, 42, 8))[0]
        return [self.person(home=home) for _ in range(count)]

    # -- properties, buildings, units ---------------------------------------------------------

    def property(self, index: int, kind: str, mix: list[str], buildings: int,
                 *, related: str | None = None, site: Record | None = None) -> _Prop:
        rng = self.rng
        if site is None:
            city, low, high = rng.choice(CITIES)
            street = rng.choice(STREETS)
            postal = self.s(f"{rng.randint(low, high):05d}")
            first_no = rng.randint(1, 120)
            numbers = [self.s(str(first_no + 2 * b)) for b in range(buildings)]
        else:
            street, postal, city = site["street"], site["postalCode"], site["city"]
            numbers = [site["houseNumber"]]
        label = f"{street} {numbers[0]}" + (f"-{numbers[-1]}" if len(numbers) > 1 else "")
        record = self.add("properties", {
            "id": self.uid(), "number": None if rng.random() < 0.05 else self.s(str(1001 + index)),
            "name": f"{label}, {city}", "kind": kind,
            "meaTotal": (1000 if len(mix) <= 40 else 10000) if kind == "WEG" else None,
            "managedFrom": self.date(self.days_ago(120, 20 * 365)),
            "managedUntil": self.date(dt.date(self.today.year + 1, 6, 30)) if rng.random() < 0.03 else None,
            "relatedWegPropertyId": related,
        })
        prop = _Prop(record)
        for number, blabel in zip(numbers, building_labels(rng, len(numbers)), strict=True):
            prop.buildings.append(self.add("buildings", {
                "id": self.uid(), "propertyId": prop.id, "label": blabel, "street": street,
                "houseNumber": number, "postalCode": postal, "city": city, "country": "DE",
            }))
        for unit_type in mix:
            self.unit(prop, unit_type)
        return prop

    def unit(self, prop: _Prop, unit_type: str, building: Record | None = None) -> Record:
        rng = self.rng
        same = sum(1 for u in prop.units if u["type"] == unit_type)
        if building is None:
            building = prop.buildings[same % len(prop.buildings)]
        in_building = sum(1 for u in prop.units
                          if u["buildingId"] == building["id"] and u["type"] == unit_type)
        apartment = unit_type == "APARTMENT"
        record = self.add("units", {
            "id": self.uid(), "propertyId": prop.id, "buildingId": building["id"],
            "number": self.s(f"{UNIT_PREFIX[unit_type]} {same + 1:02d}"),
            "label": unit_label(rng, unit_type), "type": unit_type,
            "ownershipKind": (("WOHNEIGENTUM" if apartment else "TEILEIGENTUM")
                              if prop.kind == "WEG" else None),
            "mea": None, "areaSqm": area(rng, unit_type),
            "persons": rng.randint(1, 5) if apartment and rng.random() < 0.9 else None,
            "floor": floor(unit_type, in_building),
        })
        prop.units.append(record)
        return record

    def assign_mea(self, prop: _Prop) -> None:
        """Integer MEA proportional to area, summing exactly to meaTotal (largest remainder)."""
        total = int(prop.record["meaTotal"])
        weights = [u["areaSqm"] or 10.0 for u in prop.units]
        raw = [total * w / sum(weights) for w in weights]
        shares = [max(1, int(r)) for r in raw]
        order = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
        i = 0
        while sum(shares) != total:
            j = order[i % len(order)]
            step = 1 if sum(shares) < total else -1
            if shares[j] + step >= 1:
                shares[j] += step
            i += 1
        for unit, share in zip(prop.units, shares, strict=True):
            unit["mea"] = share

    # -- ownerships, usages, roles ------------------------------------------------------------

    def ownership(self, unit: Record, owners: list[str], start: dt.date, end: dt.date | None) -> Record:
        if end is None:
            self.owner_of[unit["id"]] = owners
        return self.add("ownerships", {
            "id": self.uid(), "unitId": unit["id"], "ownerContactIds": owners,
            "validFrom": self.date(start), "validTo": self.date(end) if end else None,
        })

    def usage(self, prop: _Prop, units: list[Record], kind: str, start: dt.date, end: dt.date | None,
              tenants: list[str]) -> Record:
        number = None
        if kind == "RENTAL" and self.rng.random() < 0.85:
            self.contract_seq += 1
            number = f"MV-{start.year}-{self.contract_seq:05d}"
        return self.add("usages", {
            "id": self.uid(), "propertyId": prop.id, "unitIds": [u["id"] for u in units],
            "type": kind, "commercial": any(u["type"] == "COMMERCIAL" for u in units),
            "startDate": self.date(start), "endDate": self.date(end) if end else None,
            "tenantContactIds": tenants, "contractNumber": number,
        })

    def role(self, prop: _Prop, contact: str, role: str, *, service: str | None = None,
             start: dt.date | None = None, end: dt.date | None = None) -> Record:
        return self.add("property-roles", {
            "id": self.uid(), "propertyId": prop.id, "contactId": contact, "role": role,
            "serviceType": service, "validFrom": self.date(start) if start else None,
            "validTo": self.date(end) if end else None,
        })

    def fill_owners(self, prop: _Prop, units: list[Record], group: list[str] | None = None) -> None:
        """One owner group per WEG unit (parking mostly with a flat); one per MV/SEV property."""
        rng = self.rng
        if prop.kind != "WEG":
            group = group or self.owner_group()
            prop.owners.append(group)
            bought = self.days_ago(400, 25 * 365)
            for unit in units:
                self.ownership(unit, group, bought, None)
            return
        for unit in units:
            side_room = unit["type"] in ("PARKING", "CELLAR")
            if prop.owners and rng.random() < (0.8 if side_room else 0.05):
                group = rng.choice(prop.owners)
            else:
                group = self.owner_group()
                prop.owners.append(group)
            start = self.days_ago(60, 25 * 365)
            if rng.random() < 0.05:               # an earlier owner, ended the day before
                self.ownership(unit, self.owner_group(),
                               start - dt.timedelta(days=rng.randint(400, 7000)),
                               start - dt.timedelta(days=1))
            if rng.random() < 0.02:               # owner change already registered
                change = self.today + dt.timedelta(days=rng.randint(10, 120))
                self.ownership(unit, group, start, change - dt.timedelta(days=1))
                self.ownership(unit, self.owner_group(), change, None)
            else:
                self.ownership(unit, group, start, None)

    def fill_usages(self, prop: _Prop, units: list[Record]) -> None:
        """Tenancies, vacancy, self use; parking and cellars often ride on a flat's lease."""
        rng = self.rng
        buildings = {b["id"]: b for b in prop.buildings}
        leases: list[tuple[Record, list[Record]]] = []
        for unit in units:
            if unit["type"] in ("PARKING", "CELLAR", "OTHER"):
                if leases and rng.random() < 0.4:
                    leases[rng.randrange(len(leases))][1].append(unit)
                    continue
                if prop.kind == "WEG" or rng.random() < 0.7:
                    continue
            elif prop.kind == "WEG" and rng.random() > 0.22:
                continue
            weights = (70, 20, 10) if prop.kind == "WEG" else (88, 5 if prop.kind == "SEV" else 0, 7)
            kind = rng.choices(("RENTAL", "SELF_USE", "VACANCY"), weights=weights)[0]
            start = self.days_ago(30, 12 * 365)
            building = buildings.get(unit["buildingId"], prop.buildings[0])
            if kind == "RENTAL" and rng.random() < 0.1:      # the tenant before moved out
                self.usage(prop, [unit], "RENTAL", start - dt.timedelta(days=rng.randint(300, 3000)),
                           start - dt.timedelta(days=1), self.tenants(building))
            tenants = self.tenants(building) if kind == "RENTAL" else []
            leases.append((self.usage(prop, [unit], kind, start, None, tenants), [unit]))
        for record, group in leases:
            if len(group) > 1:
                record["unitIds"] = [u["id"] for u in group]

    def fill_roles(self, prop: _Prop) -> None:
        rng = self.rng
        if prop.kind == "WEG" and rng.random() < 0.85:
            contacts = self.records["contacts"]
            people = [g[0] for g in prop.owners if contacts[g[0]]["kind"] == "PERSON"]
            board = people[:rng.randint(2, 3)]
            since = self.days_ago(30, 6 * 365)
            for i, contact in enumerate(board):
                self.role(prop, contact, "ADVISORY_BOARD_MEMBER" if i else "ADVISORY_BOARD_CHAIR",
                          start=since)
            if len(people) > len(board) and rng.random() < 0.15:      # former board member
                self.role(prop, people[len(board)], "ADVISORY_BOARD_MEMBER",
                          start=since - dt.timedelta(days=1500), end=since - dt.timedelta(days=1))
        if rng.random() < 0.7:
            caretaker = (self.person(email=rng.random() < 0.5) if rng.random() < 0.6
                         else self.company(caretaker_company(rng)))
            self.role(prop, caretaker, "CARETAKER",
                      start=self.days_ago(30, 3000) if rng.random() < 0.7 else None)
        for _ in range(rng.randint(0, 3)):
            if not self.providers or rng.random() < 0.35:
                service, name = provider(rng)
                self.providers.append((self.company(name), service))
            contact, service = rng.choice(self.providers)
            self.role(prop, contact, "SERVICE_PROVIDER", service=service)

    def regular(self, index: int, kind: str, size: int, reserve: int = 0) -> tuple[_Prop, list[Record]]:
        """A random WEG or MV property; the first ``reserve`` units are left without owners."""
        prop = self.property(index, kind, unit_mix(self.rng, size), building_count(self.rng, size))
        if kind == "WEG":
            self.assign_mea(prop)
        rest = prop.units[reserve:]
        self.fill_owners(prop, rest)
        self.fill_usages(prop, rest)
        self.fill_roles(prop)
        return prop, prop.units[:reserve]

    def sev(self, index: int, weg: _Prop, flats: list[Record], client: list[str] | None) -> _Prop:
        """An SEV property over flats of a WEG: same building address, same numbers, same owner."""
        site = next((b for b in weg.buildings if b["id"] == flats[0]["buildingId"]), weg.buildings[0])
        prop = self.property(index, "SEV", [], 1, related=weg.id, site=site)
        for flat in flats:
            twin = self.unit(prop, "APARTMENT")
            for key in ("number", "label", "areaSqm", "persons", "floor"):
                twin[key] = flat[key]
        self.fill_owners(prop, prop.units, client)
        return prop

    # -- the whole data set -------------------------------------------------------------------

    def run(self, count: int) -> Dataset:
        rng = self.rng
        sizes = size_plan(rng, count)
        weg, twin_owner = self.showcase(sizes[0])
        wegs = [weg]
        for index in range(2, count):
            kind = ("WEG", "MV")[index - 2] if index < 4 else rng.choices(
                ("WEG", "MV", "SEV"), weights=(66, 22, 12))[0]
            if kind == "SEV":
                base = rng.choice(wegs)
                flats = [u for u in base.units if u["type"] == "APARTMENT" and u["id"] in self.owner_of]
                if flats:
                    picks = rng.sample(flats, min(len(flats), rng.randint(1, 3)))
                    sev = self.sev(index, base, picks, self.owner_of[picks[0]["id"]])
                    self.fill_usages(sev, sev.units)
                    self.fill_roles(sev)
                    continue
                kind = "MV"
            prop, reserved = self.regular(index, kind, sizes[index], reserve=1 if index == 2 else 0)
            if reserved:            # the multi-role contact owns a flat here too
                self.ownership(reserved[0], [twin_owner], self.days_ago(300, 4000), None)
                self.edge["multi_role_contact"].append(prop.id)
            if kind == "WEG":
                wegs.append(prop)
        self.edge["unlinked_contact"].append(self.person(first="Ingrid", last="Meißner", female=True))
        return Dataset(self.records, self.tombstones, self.edge, seed=self.seed, today=self.today)

    def showcase(self, size: int) -> tuple[_Prop, str]:
        """Plant every edge case of API.md section 1 in properties 0 (WEG) and 1 (its SEV twin).

        Returns the WEG and the multi-role contact (owner, tenant, board member).
        """
        rng, edge, today = self.rng, self.edge, self.today
        days = dt.timedelta
        mix = ["APARTMENT"] * 9 + ["PARKING"] + unit_mix(rng, max(size, 16) - 10)
        weg = self.property(0, "WEG", mix, 2)
        ghost = {"id": self.uid()}                      # a building deleted in SCALARA
        self.tombstones["buildings"][ghost["id"]] = self.stamp(days_back=25)
        cellar = self.unit(weg, "CELLAR", building=ghost)
        self.assign_mea(weg)
        a = weg.units[:9]
        parking = weg.units[9]
        edge["mehrhausanlage"].append(weg.id)
        edge["dangling_building"].append(cellar["id"])
        edge["deleted_building"].append(ghost["id"])

        katrin = self.person(first="Käthe", last="Groß", female=True, email=False)
        multi = self.person(first="Jürgen", last="Weiß", female=False, email=True, title="Dr.")
        edge["no_email"].append(katrin)
        edge["umlauts"] += [katrin, multi]
        edge["multi_role_contact"] += [multi, weg.id]

        couple = self.owner_group("couple")
        weg.owners.append(couple)
        first = self.ownership(a[0], couple, self.days_ago(900, 5000), None)
        self.ownership(cellar, couple, self.days_ago(900, 5000), None)
        edge["co_owners"].append(first["id"])

        heirs = [self.person(last="Öztürk", first=name, female=female)
                 for name, female in (("Ayşe", True), ("Mehmet", False), ("Gülşen", True))]
        buyer = self.company("Nordlicht Immobilien GmbH & Co. KG")
        change = today + days(45)
        old = self.ownership(a[1], heirs, self.days_ago(400, 900), change - days(1))
        new = self.ownership(a[1], [buyer], change, None)
        edge["co_owners"].append(old["id"])
        edge["future_owner_change"] += [a[1]["id"], old["id"], new["id"]]
        edge["umlauts"].append(heirs[0])
        edge["company"].append(buyer)

        for unit, owners in ((a[2], [katrin]), (a[3], [self.person()]), (a[4], [self.person()]),
                             (a[5], [self.person(first="Renate", last="Strauß", female=True)]),
                             (a[6], [self.person()]), (a[7], [multi]), (a[8], self.owner_group())):
            weg.owners.append(owners)
            self.ownership(unit, owners, self.days_ago(700, 9000), None)
        self.ownership(parking, weg.owners[-6], self.days_ago(700, 9000), None)    # a[3]'s owner

        house = weg.buildings[0]
        ended = self.usage(weg, [a[2]], "RENTAL", today - days(5 * 365), today - days(60),
                           self.tenants(house, 1))
        self.usage(weg, [a[2]], "RENTAL", today - days(14), None, self.tenants(house, 1))
        lease = self.usage(weg, [a[3], parking], "RENTAL", self.days_ago(200, 2000), None,
                           self.tenants(house, 2))
        vacant = self.usage(weg, [a[4]], "VACANCY", today - days(75), None, [])
        own_use = self.usage(weg, [a[5]], "SELF_USE", self.days_ago(400, 4000), None, [])
        edge["ended_tenancy"].append(ended["id"])
        edge["lease_flat_and_parking"].append(lease["id"])
        edge["vacancy"].append(vacant["id"])
        edge["self_use"].append(own_use["id"])

        rest = weg.units[10:-1]
        self.fill_owners(weg, rest)
        self.fill_usages(weg, rest)
        chair = self.role(weg, weg.owners[5][0], "ADVISORY_BOARD_CHAIR", start=today - days(3 * 365))
        member = self.role(weg, multi, "ADVISORY_BOARD_MEMBER", start=today - days(3 * 365))
        former = self.role(weg, katrin, "ADVISORY_BOARD_CHAIR", start=today - days(9 * 365),
                           end=today - days(3 * 365 + 1))
        caretaker = self.role(weg, self.person(first="Günter", last="Böhm", female=False), "CARETAKER",
                              start=today - days(2000))
        elevator = self.company("Weiß & Söhne Aufzüge GmbH")
        self.providers.append((elevator, "Aufzugswartung"))
        service = self.role(weg, elevator, "SERVICE_PROVIDER", service="Aufzugswartung")
        edge["roles_all_kinds"] += [chair["id"], member["id"], caretaker["id"], service["id"]]
        edge["service_provider"].append(service["id"])
        edge["ended_role"].append(former["id"])
        edge["company"].append(elevator)

        sev = self.sev(1, weg, [a[6]], self.owner_of[a[6]["id"]])
        self.usage(sev, sev.units, "RENTAL", self.days_ago(100, 1500), None, [multi])
        edge["weg_sev_twin"] += [a[6]["id"], sev.units[0]["id"]]
        return weg, multi
