"""``guardrail trace find``: exit codes, output, and refused input named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail.cli import main
from guardrail.simulate import leaks

from .conftest import ACCOUNTS, leaked


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_a_leak_is_named_with_exit_0(index_file: Path, tmp_path: Path, capsys):
    suspects = _jsonl(tmp_path / "leak.jsonl", leaked(ACCOUNTS[1], 40))
    assert main(["trace", "find", str(suspects), "--index", str(index_file)]) == 0
    out = capsys.readouterr().out
    assert f"named (*, >= 9 texts matching at >= 8/48 bins): {ACCOUNTS[1].subject}" in out
    assert out.splitlines()[2].split()[1] == f"*{ACCOUNTS[1].subject}"


def test_json_output(index_file: Path, tmp_path: Path, capsys):
    suspects = _jsonl(tmp_path / "leak.jsonl", leaked(ACCOUNTS[0], 40))
    argv = ["trace", "find", str(suspects), "--index", str(index_file), "--json", "--top", "3"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["named"] == [ACCOUNTS[0].subject]
    assert data["suspects"] == 40 and len(data["ranked"]) <= 3
    assert data["ranked"][0]["subject"] == ACCOUNTS[0].subject
    assert data["ranked"][0]["texts_matched"] >= 9
    assert data["index"]["entries"] > 0 and data["rule"] == {"min_bins": 8, "min_texts": 9}


def test_nobody_is_exit_1(index_file: Path, tmp_path: Path, capsys):
    suspects = _jsonl(tmp_path / "clean.jsonl", list(leaks.never_served(77, 40)))
    assert main(["trace", "find", str(suspects), "--index", str(index_file)]) == 1
    assert "attributed to nobody" in capsys.readouterr().out


def test_every_suspect_format_and_directories(index_file: Path, tmp_path: Path, capsys):
    texts = leaked(ACCOUNTS[2], 36)  # ~half match: 24 left 8-16, around the 9 that names
    folder = tmp_path / "dataset"
    (folder / "sub").mkdir(parents=True)
    completion = {"choices": [{"message": {"role": "assistant", "content": t}} for t in texts[:6]]}
    (folder / "completions.json").write_text(json.dumps(completion))
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": t}]}
        for t in texts[6:12]
    ]
    (folder / "chats.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    parts = [
        {"messages": [{"role": "assistant", "content": [{"type": "text", "text": t}]}]}
        for t in texts[12:18]
    ]
    (folder / "sub" / "parts.jsonl").write_text("\n".join(map(json.dumps, parts)))
    for n, text in enumerate(texts[18:]):
        (folder / "sub" / f"{n}.txt").write_text(text)
    (folder / "ignored.bin").write_bytes(b"\xff\xfe")
    argv = ["trace", "find", str(folder), "--index", str(index_file), "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["suspects"] == 36 and data["named"] == [ACCOUNTS[2].subject]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "fine"}\n{"text": oops}\n', "bad.jsonl:2: not JSON"),
        ("bad.jsonl", '{"text": "fine"}\n\n{"prompt": "x"}\n', 'bad.jsonl:3: no "text"'),
        ("bad.jsonl", "[1, 2]\n", "bad.jsonl:1: expected an object"),
        ("bad.json", "{", "bad.json: not JSON"),
    ],
)
def test_bad_input_is_exit_2_naming_file_and_line(
    index_file: Path, tmp_path: Path, capsys, name: str, content: str, message: str
):
    (tmp_path / name).write_text(content)
    assert main(["trace", "find", str(tmp_path / name), "--index", str(index_file)]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_suspect_or_a_bad_index_is_exit_2(index_file: Path, tmp_path: Path, capsys):
    assert main(["trace", "find", str(tmp_path / "none"), "--index", str(index_file)]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("some text")
    (tmp_path / "index").write_bytes(b"garbage")
    assert main(["trace", "find", str(tmp_path / "x.txt"), "--index", str(tmp_path / "index")]) == 2
    assert "not a guardrail provenance index" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("\n")
    assert main(["trace", "find", str(tmp_path / "empty.jsonl"), "--index", str(index_file)]) == 2
    assert "no suspect texts" in capsys.readouterr().err


def test_several_index_files_and_globs_are_searched_as_one(tmp_path: Path, capsys):
    from guardrail.provenance.index import ProvenanceIndex
    from guardrail.provenance.sketch import Sketcher

    workers = [ProvenanceIndex(capacity=2000) for _ in range(2)]
    for number, account in enumerate(ACCOUNTS):  # each worker served some of the accounts
        for text in leaks.outputs(3, account):
            workers[number % 2].add(account.subject, text, 1_800_000_000)
    for number, index in enumerate(workers):
        index.save(tmp_path / f"prov-{number}.grprov")
    (tmp_path / "prov-0.grprov.lock").touch()  # what a server keeps next to them
    suspects = _jsonl(tmp_path / "leak.jsonl", leaked(ACCOUNTS[1], 40))
    argv = ["trace", "find", str(suspects), "--json", "--index", str(tmp_path / "prov-*")]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["named"] == [ACCOUNTS[1].subject]
    assert data["index"]["files"] == [str(tmp_path / f"prov-{n}.grprov") for n in (0, 1)]
    assert data["index"]["entries"] == sum(map(len, workers))
    # a glob that matches nothing, and indexes of two keys, are refused
    assert main(["trace", "find", str(suspects), "--index", str(tmp_path / "none-*")]) == 2
    assert "no index file matches" in capsys.readouterr().err
    keyed = ProvenanceIndex(sketcher=Sketcher(b"another key"))
    keyed.save(tmp_path / "keyed.grprov")
    one, other = str(tmp_path / "prov-0.grprov"), str(tmp_path / "keyed.grprov")
    assert main(["trace", "find", str(suspects), "--index", one, "--index", other]) == 2
    assert "different keys" in capsys.readouterr().err
