"""At least 100 bad command lines (tests/data/bad_inputs.txt): each exits with status 2 and one line
on stderr naming what is wrong, with no traceback and before any work starts. Every case is one
in-process `main([...])` call; the work of every command is replaced by a function that fails the
test, so a case that gets past the checks fails loudly instead of computing."""

import ast
import pathlib
import shlex
import time

import numpy as np
import pytest

from flowsim import cli

CASES_FILE = pathlib.Path(__file__).parent / "data" / "bad_inputs.txt"


def _parse(text: str) -> tuple[list[tuple[str, str, object]], list[tuple[str, str]]]:
    """(files, cases) of the data file: files as (directive, path, content), cases as (args, piece)."""
    files, cases = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@file "):
            path, _, literal = line[len("@file ") :].partition(" = ")
            files.append(("file", path.strip(), ast.literal_eval(literal)))
        elif line.startswith("@pickled-npz "):
            files.append(("pickled-npz", line.split(None, 1)[1].strip(), None))
        else:
            args, sep, piece = line.rpartition(" || ")
            assert sep and args and piece, f"malformed case line: {line!r}"
            cases.append((args.strip(), piece.strip()))
    return files, cases


FILES, CASES = _parse(CASES_FILE.read_text())


def _write(root: pathlib.Path) -> None:
    for kind, rel, content in FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "pickled-npz":
            np.savez(path, t=np.arange(3.0), loss=np.array([None, {"a": 1}, 3], dtype=object))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            assert isinstance(content, str)
            path.write_text(content)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    _write(root)
    return root


@pytest.fixture
def no_work(monkeypatch):
    """Every command's work runs through `cli._work`; here it fails the test instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("work started: the bad input was not refused before computing")

    monkeypatch.setattr(cli, "_work", refuse)


def test_the_list_is_long_and_well_formed():
    assert len(CASES) >= 100
    assert len({a for a, _ in CASES}) == len(CASES), "a case is listed twice"
    assert {kind for kind, _, _ in FILES} == {"file", "pickled-npz"}


@pytest.mark.parametrize("args, piece", CASES, ids=[a for a, _ in CASES])
def test_bad_input_exits_2_with_one_line(args, piece, workdir, no_work, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    argv = shlex.split(args.replace("{tmp}", str(workdir)))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err, err
    assert e.value.code == 2, err
    assert len(lines) == 1, err
    assert piece in lines[0], lines[0]
    assert elapsed < 5, f"{elapsed:.1f} s to refuse"
