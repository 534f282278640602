"""The loader and the validator as a library: robustness, positions, the public verbs."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from engine.errors import Diagnostic, SpecError
from engine.loader import MAX_BYTES, format_path, load_bytes, load_document, load_text
from engine.paths import mapping_files
from engine.validate import load_mapping_set, validate_paths
from tests.conftest import MAPPINGS_DIR

SHIPPED = mapping_files(MAPPINGS_DIR)


@pytest.fixture()
def mappings(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, target, ignore=shutil.ignore_patterns("*.test.yaml"))
    return target


def test_shipped_mappings_have_no_diagnostics_at_all() -> None:
    result = validate_paths([MAPPINGS_DIR])
    assert result.diagnostics == []
    assert result.valid
    assert [Path(f).name for f in result.files] == [p.name for p in SHIPPED]
    assert sorted(result.mappings) == ["contacts", "contracts", "properties", "responsibilities", "units"]


def test_load_mapping_set_returns_plain_specs() -> None:
    specs = load_mapping_set([MAPPINGS_DIR])
    units = specs["units"]
    assert type(units) is dict
    assert units["target"] == "units"
    assert type(units["rules"]) is list
    usage = units["rules"][0]["fields"]["usage"]
    assert usage["values"]["APARTMENT"] == "PRIVATE"
    assert type(usage["values"]["APARTMENT"]) is str  # not a ruamel ScalarString
    assert specs["responsibilities"]["rules"][0]["fields"]["showInPortal"]["values"]["CARETAKER"] is False


def test_load_mapping_set_raises_spec_error_with_every_error(mappings: Path) -> None:
    units = mappings / "units.yaml"
    units.write_text(units.read_text().replace("source: units", "source: unit").replace(
        "number: number", "number: nummer"))
    with pytest.raises(SpecError) as caught:
        load_mapping_set([mappings])
    codes = [d.code for d in caught.value.diagnostics]
    assert codes == ["unknown-resource"]  # unknown source: field names are not guessed
    assert all(d.severity == "error" for d in caught.value.diagnostics)
    assert "units.yaml:8:13: unknown SCALARA resource 'unit'" in str(caught.value)


def test_warnings_do_not_fail_load_mapping_set(mappings: Path) -> None:
    units = mappings / "units.yaml"
    units.write_text(units.read_text().split("\n", 1)[1])  # drop the schema line
    result = validate_paths([mappings])
    assert [d.code for d in result.diagnostics] == ["schema-line"]
    assert result.valid
    assert "units" in load_mapping_set([mappings])


def test_test_files_are_not_mappings(mappings: Path) -> None:
    (mappings / "units.test.yaml").write_text("given: [\n")  # broken, but not a mapping file
    result = validate_paths([mappings])
    assert result.valid
    assert not any(f.endswith(".test.yaml") for f in result.files)


def test_single_file_resolves_refs_against_its_folder(mappings: Path) -> None:
    result = validate_paths([mappings / "units.yaml"])
    assert result.diagnostics == []
    assert result.files == [str(mappings / "units.yaml")]
    assert list(result.mappings) == ["units"]


def test_problems_of_context_files_are_not_reported(mappings: Path) -> None:
    (mappings / "contacts.yaml").write_text("mapping: [\n")
    result = validate_paths([mappings / "units.yaml"])
    assert result.valid


def test_missing_path_is_a_diagnostic_not_an_exception(tmp_path: Path) -> None:
    result = validate_paths([tmp_path / "nope.yaml"])
    assert [d.code for d in result.diagnostics] == ["not-found"]
    assert not result.valid


def test_diagnostics_are_sorted_by_file_line_col(mappings: Path) -> None:
    for name in ("units.yaml", "contracts.yaml"):
        path = mappings / name
        path.write_text(path.read_text().replace("fields:", "fields:\n      zzz: nope", 1)
                        .replace("mapping:", "mappin:", 1))
    result = validate_paths([mappings])
    keys = [(d.file, d.line, d.col) for d in result.diagnostics]
    assert keys == sorted(keys)
    # contracts lost its name, so contacts' only_if_referenced_by now names nothing
    assert {Path(d.file).name for d in result.diagnostics} == {"units.yaml", "contracts.yaml", "contacts.yaml"}


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as fh:
        fh.write(b"mapping: units\nrules:\n")
        chunk = b"  - {name: x, source: units, id: id, fields: {}}\n" * 20_000
        while fh.tell() <= MAX_BYTES:
            fh.write(chunk)
    doc, problems = load_document(huge)
    assert doc is None
    assert [p.code for p in problems] == ["file-too-large"]
    assert "limit is 5 MB" in problems[0].message


def test_deep_block_nesting_is_refused_without_recursion_error() -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "v: 1\n"
    doc, problems = load_text(text, "deep.yaml")
    assert doc is None
    assert problems[0].code == "too-deep"
    assert problems[0].line == 101


def test_flow_nesting_of_100_is_allowed_101_is_not() -> None:
    assert load_text("a: " + "[" * 99 + "]" * 99, "ok.yaml")[1] == []
    assert load_text("a: " + "[" * 100 + "]" * 100, "bad.yaml")[1][0].code == "too-deep"


@pytest.mark.parametrize("data, code", [
    (b"", "file-empty"),
    (b"   \n\n", "file-empty"),
    (b"\xff\xfe\x00m\x00a", "binary-file"),
    (b"mapping: caf\xe9\n", "encoding"),
    (b"a: \x07\n", "encoding"),
    (b"a: [1,\n", "yaml-syntax"),
    (b"a: 'open\n", "yaml-syntax"),
    (b"&x a: 1\n", "yaml-alias"),
    (b"a: !!binary aGk=\n", "yaml-tag"),
    (b"a: !!set {x}\n", "yaml-tag"),
    (b"? {a: 1}\n: 2\n", "yaml-syntax"),
])
def test_loader_turns_bad_input_into_one_diagnostic(data: bytes, code: str) -> None:
    doc, problems = load_bytes(data, "f.yaml")
    assert doc is None
    assert [p.code for p in problems] == [code]
    assert all(isinstance(p, Diagnostic) and p.severity == "error" for p in problems)


def test_bom_and_crlf_are_fine() -> None:
    doc, problems = load_bytes(b"\xef\xbb\xbfmapping: units\r\ntarget: units\r\n", "f.yaml")
    assert problems == []
    assert doc is not None and doc.plain == {"mapping": "units", "target": "units"}


def test_all_duplicate_keys_are_reported_with_both_positions() -> None:
    _, problems = load_text("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "f.yaml")
    assert [(p.line, p.col, p.message) for p in problems] == [
        (4, 3, "duplicate key 'c' (first at line 3, column 3)"),
        (5, 1, "duplicate key 'a' (first at line 1, column 1)"),
    ]


def test_plain_tree_has_text_keys_and_iso_dates() -> None:
    doc, _ = load_text("values: {7: a, true: b, 2.0: c}\nwhen: 2024-05-01\nn: 1.5\n", "f.yaml")
    assert doc is not None
    assert doc.plain == {"values": {"7": "a", "true": "b", "2": "c"}, "when": "2024-05-01", "n": 1.5}


@pytest.mark.parametrize("source, offset, expected", [
    ('k: "abc(d"\n', 4, (1, 9)),                  # double-quoted: +1 for the quote
    ("k: 'a ''b'' c('\n", 9, (1, 15)),            # single-quoted: doubled quotes count twice
    ("k: abc(d\n", 4, (1, 8)),                    # plain
    ("k: |\n  line1\n    foo(\n", 11, (3, 8)),     # literal block: deeper lines keep their indent
    ("k:\n  - first\n  - >\n    a\n    b(\n", 3, (5, 6)),  # folded block in a list item
])
def test_expression_positions(source: str, offset: int, expected: tuple[int, int]) -> None:
    doc, problems = load_text(source, "f.yaml")
    assert problems == [] and doc is not None
    path: tuple[str | int, ...] = ("k", 1) if isinstance(doc.plain["k"], list) else ("k",)
    assert doc.expression_position(path, offset) == expected


def test_locate_points_at_keys_values_and_items() -> None:
    doc, _ = load_text("a:\n  b: x\n  c: [1, {d: 2}]\n", "f.yaml")
    assert doc is not None
    assert doc.locate(("a", "b")) == (2, 6)
    assert doc.locate(("a", "b"), at="key") == (2, 3)
    assert doc.locate(("a", "c", 1, "d")) == (3, 14)
    assert doc.locate(("a", "c")) == (3, 3)
    assert doc.locate(("a", "nope", "deeper")) == (1, 1)


def test_format_path() -> None:
    assert format_path(("rules", 0, "fields", "usage", "values", "FOO")) == "$.rules[0].fields.usage.values.FOO"
    assert format_path(("values", "a b", 2)) == "$.values['a b'][2]"
    assert format_path(()) == "$"


@pytest.mark.slow
def test_mutated_mappings_never_crash(mappings: Path) -> None:
    """Random edits of a real file: every outcome is a list of diagnostics, never an exception."""
    rng = random.Random(20240501)
    original = (MAPPINGS_DIR / "units.yaml").read_text()
    pieces = [":", " ", "\n", "[", "]", "{", "}", "'", '"', "&a ", "*a", "!x ", "\t", "- ", "|", "`", "(", ")",
              "map", "ref", "const", "expr", "object", "- name: x"]
    target = mappings / "units.yaml"
    seen_codes: set[str] = set()
    for _ in range(60):
        text = original
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(text))
            if rng.random() < 0.5:
                text = text[:pos] + rng.choice(pieces) + text[pos:]
            else:
                text = text[:pos] + text[pos + rng.randint(1, 12):]
        target.write_text(text)
        result = validate_paths([mappings])
        for diag in result.diagnostics:
            assert isinstance(diag, Diagnostic)
            assert diag.line >= 0 and diag.col >= 0
            seen_codes.add(diag.code)
    assert len(seen_codes) >= 5


def _tree_paths(node: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_tree_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_tree_paths(value, (*prefix, index)))
    return out


@pytest.mark.slow
def test_structurally_wrong_mappings_never_crash(mappings: Path) -> None:
    """Subtrees replaced by values of the wrong shape: schema errors, and the semantic checks cope."""
    import copy
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    rng = random.Random(7)
    junk: list[object] = [None, 1, 2.5, True, [], {}, "x", "", "a.b[", {"map": 1}, {"ref": 3, "from": []},
                          {"object": []}, {"const": None}, ["x"], {"name": 1, "in": {}}, "units", "ref_id('u')",
                          {"resource": "buildings", "key": 5}]
    invalid = 0
    for _ in range(40):
        name = rng.choice(SHIPPED).name
        data = yaml.load((MAPPINGS_DIR / name).read_text())
        for _ in range(rng.randint(1, 3)):
            path = rng.choice([p for p in _tree_paths(data) if p])
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = copy.deepcopy(rng.choice(junk))
        buffer = io.StringIO()
        yaml.dump(data, buffer)
        (mappings / name).write_text(buffer.getvalue())
        result = validate_paths([mappings])
        invalid += not result.valid
        assert all(d.file.endswith(".yaml") and d.line >= 0 for d in result.diagnostics)
        shutil.copyfile(MAPPINGS_DIR / name, mappings / name)
    assert invalid >= 30  # almost every such edit is an error, and none is a crash


def test_a_long_source_line_is_cut_around_the_column() -> None:
    from engine.errors import Diagnostic
    from engine.validate.report import render_diagnostic

    line = "x" * 5000 + "BAD" + "y" * 5000
    diag = Diagnostic("f.yaml", 1, 5001, "boom", source_line=line)
    text = render_diagnostic(diag)
    excerpt, caret = [t for t in text.splitlines() if t.startswith("    ")][:2]
    assert len(excerpt) < 140 and excerpt.strip().startswith("...") and excerpt.endswith("...")
    assert excerpt[len(caret) - 1] == "B"  # the caret still points at the column


@pytest.mark.parametrize("expression, offset, says", [
    ("join_nonempty(' ', [number, label)", 33, "expected ',' or ']' at the caret, found ')'"),
    ("number ||", 9, "expected an expression after '||' at the caret, but the expression ends"),
    ("coalesce(number, label", 22, "expected ')' at the caret to close the '(' at column 9"),
    ("a.b.", 4, "expected a field name or '[' or '{' at the caret, found the end"),
    ("[?a == ]", 7, "expected an expression after '==' at the caret, found ']'"),
    ("{a b}", 3, "expected ':' at the caret, found 'b'"),
    ("a b", 2, "expected an operator (. | || && == != < > ...) or the end at the caret, found 'b'"),
    ("active(validFrom, validTo)) && true", 26, "the ')' at the caret closes nothing"),
    ("'abc", 0, "expected a closing ' for the text in single quotes that starts at the caret"),
    ("`1", 0, "expected a closing ` for the literal in backticks that starts at the caret"),
])
def test_jmespath_syntax_errors_say_what_was_expected_at_the_caret(expression: str, offset: int, says: str) -> None:
    from engine.validate.expressions import parse

    parsed, message, at = parse(expression)
    assert parsed is None and message is not None
    assert message.startswith("invalid expression: ") and says in message, message
    assert at == offset
