"""Validation time is linear in the file size (issue 9, item 9): one expression holding a 1 MB
identifier took ~17 s (3 MB: 188 s), almost all in jmespath's lexer, which builds every token a
character at a time; engine/jmes.py lexes in linear time, with the very same tokens."""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from jmespath import exceptions
from jmespath.lexer import Lexer

from engine.jmes import FastLexer, FastParser
from engine.paths import MAPPINGS_DIR
from engine.validate import validate_paths

PIECES = ["a", "b_1", "_x", "1", "-2", "-", ".", "*", "[", "]", "[]", "[?", ",", ":", "@", "(", ")", "{", "}",
          " ", "'raw'", "'r\\'q'", '"q"', '"q\\"x"', '"bad\\q"', "`1`", '`"s"`', "`foo`", "`{bad`", "|", "||",
          "&", "&&", "<", "<=", ">", ">=", "!", "!=", "==", "=", "'", "`", '"', "\\", "é", "\t", "$", "0"]


def _tokens(lexer: Any, expression: str) -> Any:
    try:
        return list(lexer.tokenize(expression))
    except exceptions.JMESPathError as exc:
        return (type(exc).__name__, getattr(exc, "lex_position", None), str(exc))


def test_the_fast_lexer_yields_jmespaths_tokens_and_errors_exactly() -> None:
    rng = random.Random(9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3000):
            expression = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
            assert _tokens(FastLexer(), expression) == _tokens(Lexer(), expression), expression
    assert FastParser().parse("a.b[?c == `1`] | d").parsed["type"] == "pipe"


def _file(tmp_path: Path, size: int) -> Path:
    source = (MAPPINGS_DIR / "units.yaml").read_text(encoding="utf-8")
    path = tmp_path / f"units-{size}.yaml"
    path.write_text(source.replace("      number: number\n", f"      number: {'a' * size}\n"), encoding="utf-8")
    return path


def _cpu(path: Path) -> float:
    start = time.process_time()
    result = validate_paths([path])
    spent = time.process_time() - start
    assert not result.valid and all(len(d.message) < 2000 for d in result.diagnostics)
    return spent


@pytest.mark.slow
def test_a_5_mb_file_validates_in_under_3_seconds(tmp_path: Path) -> None:
    one, five = _cpu(_file(tmp_path, 1_000_000)), _cpu(_file(tmp_path, 5_000_000))
    assert five < 3.0, five
    assert five < 8 * one + 0.5, (one, five)            # linear, not quadratic (that was 25x)
