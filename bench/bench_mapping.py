"""Mapping throughput: the compiled interpreter vs the same mappings written by hand.

    python bench/bench_mapping.py                 # ~110,000 records, best of 3
    python bench/bench_mapping.py --scale 2 --repeat 5

Generates a deterministic SCALARA data set with realistic shapes (WEG/MV/SEV properties, a few
Mehrhausanlagen, co-owners, future owner changes, leases over several units with several
tenants, vacancies, companies, contacts without or with broken e-mail, umlauts, board members,
caretakers, service providers, ended roles, tombstones, now and then a unit whose building is
gone), then:

1. maps it with ``map_records`` and the shipped mappings/, and with bench/handwritten.py;
2. asserts both give the same payloads and fail the same records;
3. times both, side by side, and prints records/s and the ratio (target: interpreter >= 0.6x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.handwritten import map_by_hand  # noqa: E402
from engine.compile import MappingSet, compile_mappings  # noqa: E402
from engine.interpret import map_records  # noqa: E402
from engine.paths import mapping_files  # noqa: E402

RUN_DATE = dt.date(2024, 6, 1)
TARGET = 0.6  # interpreter speed as a share of the hand-written code's (issue 11)
FIRST = ["Anna", "Jürgen", "Özlem", "Hans", "Grete", "Ali", "Eva", "Björn", "Zoë", "Maximilian", "Lena", "Jörg"]
LAST = ["Müller", "Schmidt", "Weißmüller", "Yılmaz", "Meier", "Groß", "Schäfer", "Koch", "Bäcker", "Nguyen"]
STREETS = ["Lindenstraße", "Große Straße", "Am Markt", "Hafenstraße", "Königsallee", "Rosenhof", "Mühlenweg"]
CITIES = [("20095", "Hamburg"), ("40213", "Düsseldorf"), ("50667", "Köln"), ("80331", "München"),
          ("04109", "Leipzig")]
COMPANIES = ["Nordlicht Immobilien GmbH", "Glanz & Gloria Reinigung GmbH", "Bäckerei Schmidt e.K.",
             "Grün & Co. Gartenbau KG"]


def generate(scale: float = 1.0, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """A deterministic data set; about 110,000 records at scale 1."""
    rnd = random.Random(seed)

    def uid() -> str:
        return str(uuid.UUID(int=rnd.getrandbits(128), version=4))

    def day(start: int, end: int) -> str:
        return (dt.date(start, 1, 1) + dt.timedelta(days=rnd.randrange((end - start) * 365))).isoformat()

    data: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "properties", "buildings", "units", "contacts", "ownerships", "usages", "property-roles")}

    def contact(company: bool = False) -> str:
        cid = uid()
        plz, city = rnd.choice(CITIES)
        email_roll = rnd.random()
        last = rnd.choice(LAST)
        email = None if email_roll < 0.15 else ("kaputt@" if email_roll < 0.18 else f"{last.lower()}.{cid[:6]}@example.org")
        data["contacts"].append({
            "id": cid, "kind": "COMPANY" if company else "PERSON",
            "salutation": None if company else rnd.choice(["HERR", "FRAU", "DIVERS", None]),
            "title": rnd.choice([None, None, None, "Dr."]) if not company else None,
            "firstName": None if company else rnd.choice(FIRST), "lastName": None if company else last,
            "companyName": rnd.choice(COMPANIES) if company else None,
            "email": email, "phone": rnd.choice([None, "+49 40 123456"]), "mobile": None,
            "street": rnd.choice(STREETS), "houseNumber": str(rnd.randrange(1, 99)), "postalCode": plz,
            "city": city, "country": "DE", "updatedAt": "2024-05-01T00:00:00Z",
        })
        return cid

    for _ in range(int(600 * scale)):
        pid = uid()
        kind = rnd.choices(["WEG", "MV", "SEV"], [6, 3, 1])[0]
        street = rnd.choice(STREETS)
        plz, city = rnd.choice(CITIES)
        data["properties"].append({
            "id": pid, "number": str(rnd.randrange(100, 9999)), "name": f"{street} {rnd.randrange(1, 60)}, {city}",
            "kind": kind, "meaTotal": 1000 if kind == "WEG" else None, "managedFrom": day(2005, 2023),
            "managedUntil": None, "relatedWegPropertyId": None, "updatedAt": "2024-05-01T00:00:00Z"})
        bids = []
        for b in range(1 if rnd.random() < 0.7 else rnd.randrange(2, 4)):  # some Mehrhausanlagen
            bid = uid()
            bids.append(bid)
            data["buildings"].append({"id": bid, "propertyId": pid, "label": None if b == 0 else "Hinterhaus",
                                      "street": street, "houseNumber": str(10 + 2 * b), "postalCode": plz,
                                      "city": city, "country": "DE"})
        unit_ids = []
        for n in range(40):
            uid_ = uid()
            unit_ids.append(uid_)
            utype = rnd.choices(["APARTMENT", "PARKING", "CELLAR", "COMMERCIAL", "OTHER"], [70, 15, 5, 8, 2])[0]
            data["units"].append({
                "id": uid_, "propertyId": pid,
                "buildingId": rnd.choice(bids) if rnd.random() > 0.002 else uid(),  # now and then: building gone
                "number": f"WE {n + 1:02d}", "label": rnd.choice([None, None, "Dachgeschoß", "Laden"]),
                "type": utype, "ownershipKind": "WOHNEIGENTUM" if kind == "WEG" else None,
                "mea": round(rnd.uniform(5, 60), 2) if kind == "WEG" else None,
                "areaSqm": round(rnd.uniform(20, 140), 1), "persons": rnd.randrange(0, 5),
                "floor": rnd.choice(["EG", "1", "2", "DG", None])})
            owners = [contact(rnd.random() < 0.08) for _ in range(1 if rnd.random() < 0.75 else 2)]
            data["ownerships"].append({"id": uid(), "unitId": uid_, "ownerContactIds": owners,
                                       "validFrom": day(2000, 2020), "validTo": None})
        # rentals: flats with parking on one lease, vacancies, self use
        for i in range(0, 40, 2):
            roll = rnd.random()
            if roll < 0.7:
                tenants = [contact(rnd.random() < 0.05) for _ in range(rnd.choice([1, 1, 2]))]
                data["usages"].append({"id": uid(), "propertyId": pid, "unitIds": unit_ids[i:i + 2] if rnd.random() < 0.3
                                       else unit_ids[i:i + 1], "type": "RENTAL", "commercial": False,
                                       "startDate": day(2010, 2024), "endDate": rnd.choice([None, None, "2023-12-31"]),
                                       "tenantContactIds": tenants, "contractNumber": rnd.choice([None, f"MV-{i}"])})
            else:
                data["usages"].append({"id": uid(), "propertyId": pid, "unitIds": [unit_ids[i]],
                                       "type": "VACANCY" if roll < 0.85 else "SELF_USE", "commercial": False,
                                       "startDate": day(2015, 2024), "endDate": None, "tenantContactIds": [],
                                       "contractNumber": None})
        for role in rnd.sample(["ADVISORY_BOARD_CHAIR", "ADVISORY_BOARD_MEMBER", "CARETAKER", "SERVICE_PROVIDER"], 3):
            data["property-roles"].append({
                "id": uid(), "propertyId": pid, "contactId": contact(role == "SERVICE_PROVIDER"), "role": role,
                "serviceType": "Treppenhausreinigung" if role == "SERVICE_PROVIDER" and rnd.random() < 0.5 else None,
                "validFrom": day(2015, 2023), "validTo": rnd.choice([None, None, "2022-12-31"])})
        for _ in range(3):  # contacts with no link: never sent
            contact()
    data["contacts"].append({"id": uid(), "deleted": True, "deletedAt": "2024-05-01T00:00:00Z"})
    return data


def shipped(folder: Path = ROOT / "mappings") -> MappingSet:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    specs = {}
    for path in mapping_files(folder):
        spec = yaml.load(path.read_text(encoding="utf-8"))
        specs[spec["mapping"]] = spec
    return compile_mappings(specs)


def interpreted(mset: MappingSet, data: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], set[Any]]:
    result = map_records(mset, data, run_date=RUN_DATE)
    payloads = {kind: {rid: o.payload for rid, o in outs.items()} for kind, outs in result.outputs.items()}
    return payloads, {(e.resource, e.source_id) for e in result.errors}


def best(fn: Any, repeat: int) -> float:
    """Best CPU time of ``repeat`` runs (CPU time, so other work on a shared machine does not count)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def compare(data: dict[str, list[dict[str, Any]]], mset: MappingSet) -> tuple[int, int]:
    """Assert that interpreter and hand-written code agree; (payloads, failed records)."""
    ours, our_failed = interpreted(mset, data)
    hand, hand_failed = map_by_hand(data, RUN_DATE)
    assert ours.keys() == hand.keys(), (ours.keys(), hand.keys())
    for kind in ours:
        assert set(ours[kind]) == set(hand[kind]), f"reference ids of {kind} differ"
        assert ours[kind] == hand[kind], f"payloads of {kind} differ"
    assert our_failed == hand_failed, sorted(our_failed ^ hand_failed)[:5]
    return sum(len(v) for v in ours.values()), len(our_failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    data = generate(args.scale)
    n = sum(len(v) for v in data.values())
    t0 = time.perf_counter()
    mset = shipped()
    compile_ms = (time.perf_counter() - t0) * 1000
    produced, failed = compare(data, mset)

    t_interp = best(lambda: map_records(mset, data, run_date=RUN_DATE), args.repeat)
    t_hand = best(lambda: map_by_hand(data, RUN_DATE), args.repeat)
    print(f"records in: {n:,}   payloads out: {produced:,}   failed records: {failed}   (outputs identical)")
    print(f"compile mappings/: {compile_ms:.1f} ms")
    print(f"{'interpreter':<12} {t_interp:7.3f} s  {n / t_interp:>12,.0f} records/s")
    print(f"{'hand-written':<12} {t_hand:7.3f} s  {n / t_hand:>12,.0f} records/s")
    ratio = t_hand / t_interp
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(f"interpreter speed = {ratio:.2f} x hand-written (target >= {TARGET}: {verdict}); CPU time, best of "
          f"{args.repeat}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
