"""``tracebox journal``: listing and verifying, without a sandbox (replay is in integration)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracebox.cli import app
from tracebox.journal import Journal

runner = CliRunner()


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        j.append("aaaa11112222", "created", {"parent": None})
        j.append("aaaa11112222", "run", {"code": "1", "result": {"status": "ok"}})
        j.append("aaaa11112222", "close", {})
        j.append("bbbb33334444", "created", {"parent": "aaaa11112222"})
    return path


def test_lists_sessions_and_verifies(journal: Path) -> None:
    result = runner.invoke(app, ["journal", str(journal)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "aaaa11112222" in result.output
    assert "bbbb33334444" in result.output
    assert "closed" in result.output
    assert "chain verified: 5 events" in result.output


def test_json_output(journal: Path) -> None:
    result = runner.invoke(app, ["journal", str(journal), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert [s["id"] for s in data["sessions"]] == ["aaaa11112222", "bbbb33334444"]
    assert data["sessions"][1]["parent"] == "aaaa11112222"
    assert data["verify"]["ok"] is True
    assert data["verify"]["first_bad_seq"] is None


def test_a_tampered_journal_exits_1_naming_the_first_bad_seq(journal: Path) -> None:
    conn = sqlite3.connect(journal)
    conn.execute('UPDATE events SET data = \'{"code":"2"}\' WHERE seq = 2')
    conn.commit()
    conn.close()
    result = runner.invoke(app, ["journal", str(journal)])
    assert result.exit_code == 1
    assert "first bad seq 2" in result.output
    data = json.loads(runner.invoke(app, ["journal", str(journal), "--json"]).output)
    assert data["verify"]["first_bad_seq"] == 2


def test_keyed_journals_verify_with_their_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\x01" * 32)
    path = tmp_path / "keyed.db"
    with Journal(path, key=key_file.read_bytes()) as j:
        j.append("s", "run", {})
    assert runner.invoke(app, ["journal", str(path), "--key-file", str(key_file)]).exit_code == 0
    without = runner.invoke(app, ["journal", str(path)])
    assert without.exit_code == 1
    assert "needs its key" in without.output


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert runner.invoke(app, ["journal", str(tmp_path / "nope.db")]).exit_code == 2
