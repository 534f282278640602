"""The console's words in German (the default) and English, and dates in the tenant's zone.

Templates call ``t("key")``; a key missing in English falls back to German, a key missing in
both shows the key itself (a test checks both tables have the same keys).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

LANGUAGES = ("de", "en")
MENU_DE = "SCALARA: Systemeinstellungen > Externe Anbindungen > casavi > Generieren"

DE: dict[str, str] = {
    "app": "casavi-sync Konsole",
    "tenants": "Mandanten", "runs": "Läufe", "plan": "Plan", "mappings": "Mappings", "audit": "Audit-Log",
    "notice": "Datenhinweise", "notice_html": "als HTML-Datei", "notice_text": "als Text",
    "connection": "Anbindungen > SCALARA", "login": "Anmelden", "logout": "Abmelden", "user": "Benutzer",
    "password": "Passwort", "filter": "Filtern", "name": "Name", "activated": "Aktiviert",
    "connected": "Verbunden", "last_run": "Letzter Lauf", "next_run": "Nächster Lauf", "yes": "ja",
    "no": "nein", "since": "seit", "token": "Token", "account": "SCALARA-Konto", "none_yet": "noch keiner",
    "not_scheduled": "nicht geplant", "due_now": "fällig", "outcome": "Ergebnis", "trigger": "Auslöser",
    "started": "Gestartet", "finished": "Beendet", "duration": "Dauer", "changes": "Änderungen",
    "report": "Bericht", "kind": "Art", "action": "Aktion", "field": "Feld", "reason": "Grund",
    "scalara_id": "SCALARA-ID", "casavi_id": "casavi-Referenz-ID", "explain": "erklären",
    "failed_records": "Fehlgeschlagene Datensätze", "guard": "Schutz vor Massen-Archivierung",
    "allow_archive": "Archivieren erlauben und erneut ausführen", "run_now": "Jetzt ausführen",
    "no_failures": "Keine fehlgeschlagenen Datensätze.", "report_missing": "Die Berichtsdatei fehlt.",
    "not_activated": "Die SCALARA-Schnittstelle ist für diesen Mandanten nicht aktiviert. Das casavi-Team "
                     "muss sie zuerst aktivieren.",
    "activate": "Schnittstelle aktivieren", "deactivate": "Schnittstelle deaktivieren",
    "token_label": "SCALARA-Token", "save": "Speichern",
    "token_help": "Das Token erzeugt ein Administrator in " + MENU_DE + ". Es wird nur einmal angezeigt; "
                  "ein neu erzeugtes Token macht das alte ungültig.",
    "token_saved_fp": "Gespeichertes Token", "token_never_shown": "Das Token wird nie wieder angezeigt.",
    "replace_hint": "Ein neues Token ersetzt das gespeicherte; es startet keinen neuen Erstimport.",
    "disconnect": "Verbindung trennen", "disconnect_confirm": "Wirklich trennen? Das Token wird gelöscht; "
    "Verlauf und Datensatzstatus bleiben.", "confirm": "Ja, trennen", "cancel": "Abbrechen",
    "token_refused": "SCALARA hat dieses Token abgelehnt (falsch oder widerrufen). Ein Administrator erzeugt "
                     "ein neues in " + MENU_DE + ".",
    "token_empty": "Bitte das Token einfügen.",
    "progress": "Fortschritt", "phase": "Phase", "done": "erledigt", "rate": "Rate", "eta": "Restzeit",
    "per_s": "/s", "running_import": "Erstimport läuft", "running_run": "Lauf läuft",
    "run_finished": "Lauf beendet", "busy": "Läuft gerade", "busy_by": "Dieser Mandant wird gerade "
    "synchronisiert: {purpose}-Lauf, Prozess {pid} auf {host}, seit {since}. Jetzt ausführen ist "
    "gesperrt, bis er endet.",
    "msg_activated": "Schnittstelle aktiviert.", "msg_deactivated": "Schnittstelle deaktiviert.",
    "msg_replaced": "Token ersetzt. Der nächste geplante Lauf verwendet es (kein neuer Erstimport).",
    "msg_import": "Token gespeichert. Der Erstimport läuft.", "msg_disconnected": "Verbindung getrennt.",
    "msg_run_started": "Lauf gestartet.", "msg_not_connected": "Nicht verbunden; nichts zu trennen.",
    "wrong_login": "Benutzername oder Passwort falsch.",
    "throttled": "Zu viele fehlgeschlagene Anmeldungen; bitte in 15 Minuten erneut versuchen.",
    "forbidden": "Dafür fehlt Ihnen die Berechtigung.", "not_found": "Nicht gefunden.",
    "csrf": "Das Formular ist abgelaufen oder ungültig; bitte die Seite neu laden.",
    "error": "Fehler", "internal": "Interner Fehler; nichts Gespeichertes ging verloren.",
    "plan_intro": "Was ein Lauf jetzt ändern würde (es wird nichts geschrieben).",
    "up_to_date": "casavi ist aktuell.", "from": "bisher", "to": "neu", "more": "weitere",
    "mapping_set": "Mapping-Satz", "valid": "gültig", "invalid": "ungültig", "problems": "Probleme",
    "coverage": "Wertelisten-Abdeckung", "codes_missing": "Codes ohne Eintrag", "code": "Code",
    "count": "Anzahl", "from_run": "aus Lauf", "no_coverage": "Noch kein Lauf mit Abdeckungsdaten.",
    "all_codes_mapped": "Alle gelieferten Codes haben einen Eintrag.", "files": "Dateien",
    "when": "Wann", "who": "Wer", "what": "Was", "tenant": "Mandant", "detail": "Details",
    "export": "Exportieren", "language": "English", "explain_title": "Erklärung",
    "no_record": "Kein solcher Datensatz", "counts": "Zähler", "no_runs": "Noch keine Läufe.",
    "not_connected": "nicht verbunden", "state": "Status", "back": "zurück",
    "import_done": "Der Erstimport ist beendet.", "lock_held_elsewhere": "Ein Lauf eines anderen Prozesses "
    "hält diesen Mandanten: {purpose}, Prozess {pid} auf {host}, seit {since}.",
    "failures_known": "bekannt", "records": "Datensätze", "elapsed": "Laufzeit",
    "properties_done": "Liegenschaften vollständig", "current": "aktuell",
    "failures": "Fehler", "failures_intro": "Datensätze, die casavi abgelehnt hat oder die sich nicht abbilden "
    "lassen; jeder Lauf versucht sie erneut. Bestätigte Fehler machen einen Lauf nicht mehr „partial“.",
    "state_new": "neu", "state_known": "bekannt", "state_acknowledged": "bestätigt", "occurrences": "Läufe",
    "since_run": "seit Lauf", "acknowledge": "Bestätigen", "note": "Notiz",
    "msg_acknowledged": "Fehler bestätigt.", "no_known_failures": "Keine bekannten Fehler.",
    # a run's outcome and the report's count columns, shown via term("outcome", …) / term("col", …)
    "outcome_clean": "sauber", "outcome_partial": "teilweise", "outcome_aborted": "abgebrochen",
    "outcome_stopped": "angehalten", "outcome_failed": "fehlgeschlagen", "outcome_running": "läuft",
    "outcome_interrupted": "unterbrochen",
    "col_planned_create": "geplant: anlegen", "col_planned_update": "geplant: ändern",
    "col_planned_restore": "geplant: wiederherstellen", "col_planned_archive": "geplant: archivieren",
    "col_create": "angelegt", "col_update": "geändert", "col_restore": "wiederhergestellt",
    "col_archive": "archiviert", "col_unchanged": "unverändert", "col_failed": "fehlgeschlagen",
    "col_skipped": "übersprungen", "col_map_errors": "Abbildungsfehler", "col_error": "Fehler",
    "phase_extract": "Lesen aus SCALARA", "phase_reconcile": "Abgleich mit casavi", "phase_write": "Schreiben",
    "phase_archive": "Archivieren",
}

EN: dict[str, str] = {
    "app": "casavi-sync console",
    "tenants": "Tenants", "runs": "Runs", "plan": "Plan", "mappings": "Mappings", "audit": "Audit log",
    "notice": "Data notice", "notice_html": "as an HTML file", "notice_text": "as text",
    "connection": "Connections > SCALARA", "login": "Log in", "logout": "Log out", "user": "User",
    "password": "Password", "filter": "Filter", "name": "Name", "activated": "Activated",
    "connected": "Connected", "last_run": "Last run", "next_run": "Next run", "yes": "yes",
    "no": "no", "since": "since", "token": "Token", "account": "SCALARA account", "none_yet": "none yet",
    "not_scheduled": "not scheduled", "due_now": "due now", "outcome": "Outcome", "trigger": "Trigger",
    "started": "Started", "finished": "Finished", "duration": "Duration", "changes": "Changes",
    "report": "Report", "kind": "Kind", "action": "Action", "field": "Field", "reason": "Reason",
    "scalara_id": "SCALARA id", "casavi_id": "casavi reference id", "explain": "explain",
    "failed_records": "Failed records", "guard": "Mass-archive guard",
    "allow_archive": "Allow archive and run again", "run_now": "Run now",
    "no_failures": "No failed records.", "report_missing": "The report file is missing.",
    "not_activated": "The SCALARA interface is not activated for this tenant. The casavi team must "
                     "activate it first.",
    "activate": "Activate interface", "deactivate": "Deactivate interface",
    "token_label": "SCALARA token", "save": "Save",
    "token_help": "An administrator generates the token in " + MENU_DE + ". It is shown once; "
                  "generating a new one revokes the old one.",
    "token_saved_fp": "Stored token", "token_never_shown": "The token is never shown again.",
    "replace_hint": "A new token replaces the stored one; it does not start a new initial import.",
    "disconnect": "Disconnect", "disconnect_confirm": "Really disconnect? The token is deleted; history "
    "and record state stay.", "confirm": "Yes, disconnect", "cancel": "Cancel",
    "token_refused": "SCALARA refused this token (wrong or revoked). An administrator generates a new one "
                     "in " + MENU_DE + ".",
    "token_empty": "Please paste the token.",
    "progress": "Progress", "phase": "Phase", "done": "done", "rate": "Rate", "eta": "ETA",
    "per_s": "/s", "running_import": "Initial import running", "running_run": "Run in progress",
    "run_finished": "Run finished", "busy": "Busy", "busy_by": "This tenant is being synced: {purpose} "
    "run, process {pid} on {host}, since {since}. Run now is refused until it ends.",
    "msg_activated": "Interface activated.", "msg_deactivated": "Interface deactivated.",
    "msg_replaced": "Token replaced. The next scheduled run uses it (no new initial import).",
    "msg_import": "Token saved. The initial import is running.", "msg_disconnected": "Disconnected.",
    "msg_run_started": "Run started.", "msg_not_connected": "Not connected; nothing to remove.",
    "wrong_login": "Wrong user name or password.",
    "throttled": "Too many failed logins; try again in 15 minutes.",
    "forbidden": "You may not do that.", "not_found": "Not found.",
    "csrf": "The form expired or is invalid; reload the page.",
    "error": "Error", "internal": "Internal error; nothing stored was lost.",
    "plan_intro": "What a run would change now (nothing is written).",
    "up_to_date": "casavi is up to date.", "from": "before", "to": "after", "more": "more",
    "mapping_set": "Mapping set", "valid": "valid", "invalid": "invalid", "problems": "Problems",
    "coverage": "Value-map coverage", "codes_missing": "Codes without an entry", "code": "Code",
    "count": "Count", "from_run": "from run", "no_coverage": "No run with coverage data yet.",
    "all_codes_mapped": "Every code SCALARA sent has an entry.", "files": "Files",
    "when": "When", "who": "Who", "what": "What", "tenant": "Tenant", "detail": "Detail",
    "export": "Export", "language": "Deutsch", "explain_title": "Explanation",
    "no_record": "No such record", "counts": "Counts", "no_runs": "No runs yet.",
    "not_connected": "not connected", "state": "State", "back": "back",
    "import_done": "The initial import has finished.", "lock_held_elsewhere": "A run of another process "
    "holds this tenant: {purpose}, process {pid} on {host}, since {since}.",
    "failures_known": "known", "records": "records", "elapsed": "Elapsed",
    "properties_done": "Properties complete", "current": "now",
    "failures": "Failures", "failures_intro": "Records casavi rejected or that cannot be mapped; every run "
    "tries them again. Acknowledged failures no longer make a run partial.",
    "state_new": "new", "state_known": "known", "state_acknowledged": "acknowledged", "occurrences": "Runs",
    "since_run": "since run", "acknowledge": "Acknowledge", "note": "Note",
    "msg_acknowledged": "Failure acknowledged.", "no_known_failures": "No known failures.",
    "outcome_clean": "clean", "outcome_partial": "partial", "outcome_aborted": "aborted",
    "outcome_stopped": "stopped", "outcome_failed": "failed", "outcome_running": "running",
    "outcome_interrupted": "interrupted",
    "col_planned_create": "planned create", "col_planned_update": "planned update",
    "col_planned_restore": "planned restore", "col_planned_archive": "planned archive",
    "col_create": "created", "col_update": "updated", "col_restore": "restored",
    "col_archive": "archived", "col_unchanged": "unchanged", "col_failed": "failed",
    "col_skipped": "skipped", "col_map_errors": "mapping errors", "col_error": "errors",
    "phase_extract": "Reading SCALARA", "phase_reconcile": "Reconciling with casavi", "phase_write": "Writing",
    "phase_archive": "Archiving",
}

TABLES = {"de": DE, "en": EN}


def translate(lang: str, key: str, **values: Any) -> str:
    text = TABLES.get(lang, DE).get(key) or DE.get(key) or key
    return text.format(**values) if values else text


def term(lang: str, group: str, value: Any) -> str:
    """An engine word (an outcome, a count column) in the page's language; unknown ones as they are."""
    if value is None:
        return "–"
    key = f"{group}_{value}"
    return translate(lang, key) if key in DE else str(value)


def parse_stamp(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def local_time(stamp: str | dt.datetime | None, zone: dt.tzinfo, lang: str) -> str:
    """A stored UTC stamp in the tenant's zone: 02.12.2026 05:13 MEZ (de) or 2026-12-02 05:13 CET (en)."""
    moment = stamp if isinstance(stamp, dt.datetime) else parse_stamp(stamp)
    if moment is None:
        return "–"
    local = moment.astimezone(zone)
    name = local.tzname() or ""
    if lang == "de":
        name = {"CET": "MEZ", "CEST": "MESZ"}.get(name, name)
        return f"{local:%d.%m.%Y %H:%M} {name}"
    return f"{local:%Y-%m-%d %H:%M} {name}"


def number(value: Any, lang: str) -> str:
    if isinstance(value, float):
        text = f"{value:,.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        return str(value)
    if lang == "de":  # 1 234,5
        return text.replace(",", "\u202f").replace(".", ",")
    return text
