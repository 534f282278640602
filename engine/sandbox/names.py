"""German names and shapes for the sandbox's generated data (invented people and companies).

E-mail domains are under example.* so that no mail can ever go out. Split from generator.py, which
keeps the logic; this module is the tables and the small shape helpers that draw from them.
"""

from __future__ import annotations

import random
import unicodedata

CITIES: tuple[tuple[str, int, int], ...] = (
    ("Hamburg", 20095, 22769), ("Berlin", 10115, 14199), ("München", 80331, 81929),
    ("Köln", 50667, 51149), ("Frankfurt am Main", 60306, 60599), ("Stuttgart", 70173, 70629),
    ("Düsseldorf", 40210, 40629), ("Leipzig", 4103, 4357), ("Dresden", 1067, 1328),
    ("Hannover", 30159, 30669), ("Nürnberg", 90402, 90491), ("Bremen", 28195, 28779),
    ("Essen", 45127, 45359), ("Münster", 48143, 48167), ("Freiburg im Breisgau", 79098, 79117),
    ("Lübeck", 23552, 23570), ("Göttingen", 37073, 37085), ("Würzburg", 97070, 97084),
    ("Osnabrück", 49074, 49090), ("Kiel", 24103, 24159), ("Weißenfels", 6667, 6667),
    ("Fürth", 90762, 90768), ("Gießen", 35390, 35398), ("Potsdam", 14467, 14482),
)
STREETS: tuple[str, ...] = (
    "Lindenstraße", "Hauptstraße", "Schillerstraße", "Goethestraße", "Bahnhofstraße", "Gartenweg",
    "Am Mühlenbach", "Bergstraße", "Kirchplatz", "Rosenweg", "Königsallee", "Schloßstraße",
    "Friedrich-Ebert-Straße", "Große Bleichen", "Ahornweg", "Birkenallee", "Jägerstraße",
    "Uhlandstraße", "Mörikestraße", "Hölderlinweg", "Eichendorffstraße", "Brückenstraße",
    "Marktstraße", "Sonnenallee", "Weißdornweg", "Fährstraße", "Kastanienallee", "Grüner Weg",
    "Am Südpark", "Dorfstraße", "Heinrich-Heine-Straße", "Mühlenkamp", "Wörthstraße",
    "Kölner Straße", "Bürgermeister-Smidt-Straße", "Zur Alten Gärtnerei", "Straße des 17. Juni",
)
FIRST_M: tuple[str, ...] = (
    "Jürgen", "Hans-Peter", "Klaus", "Thomas", "Michael", "Andreas", "Stefan", "Jörg", "Uwe", "Björn",
    "Lukas", "Felix", "Mehmet", "Ali", "Jan", "Sören", "Maximilian", "Günter", "Dieter", "Paul",
    "Tobias", "Matthias", "Piotr", "Lars", "Karl-Heinz", "Hüseyin", "Ömer", "Niklas",
)
FIRST_F: tuple[str, ...] = (
    "Sabine", "Petra", "Ursula", "Jutta", "Käthe", "Monika", "Sophie", "Marie", "Lea", "Hannah",
    "Emine", "Ayşe", "Katrin", "Bärbel", "Birgit", "Franziska", "Renate", "Ingrid", "Claudia",
    "Julia", "Anja", "Małgorzata", "Doris", "Anna-Lena", "Gülşen", "Maren",
)
LAST: tuple[str, ...] = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
    "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann",
    "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Weiß", "Groß",
    "Öztürk", "Yılmaz", "Kaya", "Nowak", "Kowalski", "Jäger", "Böhm", "Günther", "Strauß", "Vogt",
    "Sommer", "Fuchs", "Kühn", "Lehmann", "Köhler", "Möller", "von der Heydt", "Meißner", "Çelik",
    "Petersen", "Jansen", "Rößler", "Dörr", "Schulze-Gößling", "Albrecht", "Winter", "Brandt",
)
STEMS: tuple[str, ...] = (
    "Hanse", "Alster", "Nordlicht", "Rhein-Main", "Isar", "Elbtal", "Spree", "Weser", "Südstern",
    "Ostsee", "Bergische", "Mainufer", "Lößnitz", "Förde",
)
MAIL_DOMAINS: tuple[str, ...] = (
    "example.com", "example.org", "example.net", "mail.example.com", "web.example", "posteo.example",
)
AREA_CODES: tuple[str, ...] = ("30", "40", "89", "221", "69", "711", "211", "341", "351", "511", "911", "421")
MOBILE_CODES: tuple[str, ...] = ("151", "152", "160", "162", "170", "171", "172", "176", "177", "1575")
SERVICES: tuple[tuple[str, str], ...] = (
    ("Aufzugswartung", "{last} Aufzüge GmbH"),
    ("Treppenhausreinigung", "{stem} Gebäudereinigung GmbH"),
    ("Gartenpflege", "Garten- und Landschaftsbau {last}"),
    ("Heizungswartung", "{last} Haustechnik GmbH"),
    ("Winterdienst", "{stem} Winterdienst GmbH & Co. KG"),
    ("Rauchwarnmelderwartung", "Rauchmelder-Service {stem} GmbH"),
    ("Schornsteinfeger", "Schornsteinfegerei {last}"),
    ("Müllmanagement", "{stem} Entsorgung GmbH"),
)
UNIT_PREFIX: dict[str, str] = {
    "APARTMENT": "WE", "COMMERCIAL": "GE", "PARKING": "TG", "CELLAR": "KE", "OTHER": "SE",
}
LEVELS: tuple[str, ...] = ("EG", "1. OG", "2. OG", "3. OG", "4. OG", "5. OG", "6. OG", "7. OG")
# WEG and MV sizes are drawn from these classes in shuffled blocks, so that any 16 properties
# average ~28 units (SEV properties have 1-3); small WEGs of 4 to big ones of 80.
SIZE_CLASSES: tuple[int, ...] = (4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 36, 42, 50, 64, 80)


def ascii_fold(text: str) -> str:
    """"Jürgen Weiß" -> "Juergen Weiss": the way German e-mail addresses spell umlauts."""
    for char, repl in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("Ä", "Ae"), ("Ö", "Oe"), ("Ü", "Ue"),
                       ("ß", "ss"), ("ı", "i"), ("ł", "l")):
        text = text.replace(char, repl)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in ".-_"))


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(count))


def phone(rng: random.Random) -> str:
    code = rng.choice(AREA_CODES)
    if rng.random() < 0.5:
        return f"+49 {code} {rng.randint(1, 9)}{_digits(rng, 6)}"
    return f"0{code} {rng.randint(1, 9)}{_digits(rng, 5)}"


def mobile(rng: random.Random) -> str:
    code = rng.choice(MOBILE_CODES)
    if rng.random() < 0.5:
        return f"+49 {code} {_digits(rng, 8)}"
    return f"0{code} {_digits(rng, 7)}"


def company_name(rng: random.Random) -> str:
    last, other, stem = rng.choice(LAST), rng.choice(LAST), rng.choice(STEMS)
    return rng.choice((
        f"{stem} Immobilien GmbH", f"{last} Immobilien KG", f"{last} & {other} GbR",
        f"Hausverwaltung {last} GmbH", f"{stem} Wohnbau GmbH & Co. KG", f"{last} Grundbesitz AG",
    ))


def caretaker_company(rng: random.Random) -> str:
    return rng.choice((f"Hausmeisterservice {rng.choice(LAST)}", f"{rng.choice(STEMS)} Facility GmbH"))


def provider(rng: random.Random) -> tuple[str, str]:
    service, pattern = rng.choice(SERVICES)
    return service, pattern.format(last=rng.choice(LAST), stem=rng.choice(STEMS))


def building_labels(rng: random.Random, count: int) -> list[str | None]:
    labels: list[str | None] = [None]
    if count > 1 and count <= 3 and rng.random() < 0.6:
        labels = ["Vorderhaus", "Hinterhaus", "Seitenflügel"]
    elif count > 1:
        labels = [f"Haus {chr(ord('A') + i)}" for i in range(count)]
    return labels[:count]


def building_count(rng: random.Random, units: int) -> int:
    if units < 16:
        return 1
    if units <= 40:
        return rng.choice((1, 1, 2))
    return rng.randint(2, 4)


def unit_mix(rng: random.Random, count: int) -> list[str]:
    """Flats first, then shops, parking, cellars and other rooms, in realistic shares."""
    parking = round(count * rng.uniform(0.1, 0.25)) if count >= 8 else 0
    commercial = rng.randint(1, 2) if count >= 10 and rng.random() < 0.4 else 0
    cellar = 1 if count >= 6 and rng.random() < 0.2 else 0
    other = 1 if count >= 12 and rng.random() < 0.15 else 0
    flats = max(1, count - parking - commercial - cellar - other)
    return (["APARTMENT"] * flats + ["COMMERCIAL"] * commercial + ["PARKING"] * parking
            + ["CELLAR"] * cellar + ["OTHER"] * other)[:max(count, 1)]


def size_plan(rng: random.Random, count: int) -> list[int]:
    sizes: list[int] = []
    while len(sizes) < count:
        block = list(SIZE_CLASSES)
        rng.shuffle(block)
        sizes.extend(min(80, max(4, size + rng.randint(-1, 2))) for size in block)
    return sizes[:count]


def area(rng: random.Random, unit_type: str) -> float | None:
    low, high = {"APARTMENT": (28, 140), "COMMERCIAL": (45, 320), "CELLAR": (4, 15),
                 "OTHER": (8, 30), "PARKING": (11, 14)}[unit_type]
    if unit_type == "PARKING" and rng.random() < 0.6:
        return None
    return round(rng.uniform(low, high), 2)


def unit_label(rng: random.Random, unit_type: str) -> str | None:
    if rng.random() < 0.5:
        return None
    if unit_type == "APARTMENT":
        side = rng.choice(("", " links", " rechts", " Mitte"))
        return f"{rng.randint(1, 5)}-Zimmer-Wohnung{side}"
    return rng.choice({
        "COMMERCIAL": ("Laden", "Büro", "Arztpraxis", "Bäckerei"),
        "PARKING": ("Tiefgaragenstellplatz", "Duplex-Stellplatz", "Stellplatz außen"),
        "CELLAR": ("Kellerraum", "Abstellraum"),
        "OTHER": ("Hobbyraum", "Dachboden", "Gemeinschaftsraum"),
    }[unit_type])


def floor(unit_type: str, index: int) -> str | None:
    if unit_type == "APARTMENT":
        level = index // 2
        return LEVELS[level] if level < len(LEVELS) else "DG"
    return {"COMMERCIAL": "EG", "PARKING": "UG", "CELLAR": "KG", "OTHER": None}[unit_type]
