"""`rag-ingest`: the JSON contract and the exit codes, with fake embeddings and a temp local store."""

from __future__ import annotations

import json

import pytest
from fakes import FakeEmbeddings

from ingest import cli, pipeline


@pytest.fixture(autouse=True)
def offline_store(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_QDRANT_PATH", str(tmp_path / "qdrant"))
    monkeypatch.setattr(pipeline, "load_embeddings", lambda settings: FakeEmbeddings())


def test_json_reports_what_landed_and_a_rerun_reports_it_unchanged(tmp_path, capsys):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "faq.md").write_text("# FAQ\n\nAnswers.\n")
    (tmp_path / "kb" / "broken.txt").write_bytes(b"\x00\x01")

    assert cli.main([str(tmp_path / "kb"), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli.main([str(tmp_path / "kb"), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)

    assert {"added", "changed", "removed", "unchanged", "chunks", "failed", "seconds"} <= first.keys()
    assert (first["added"], first["chunks"], [f["path"] for f in first["failed"]]) == (1, 1, ["broken.txt"])
    assert (second["added"], second["unchanged"], second["chunks"]) == (0, 1, 0)


def test_nothing_readable_exits_1_and_a_missing_path_exits_2(tmp_path, capsys):
    (tmp_path / "empty.md").write_text("")
    assert cli.main([str(tmp_path / "empty.md")]) == 1
    assert "empty.md" in capsys.readouterr().out
    assert cli.main([str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_bad_setting_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_COLLECTION", "bad name!")
    assert cli.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("rag-ingest: RAG_COLLECTION=bad name! is not allowed")


def test_the_summary_names_a_symlink_it_did_not_follow(tmp_path, capsys):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "faq.md").write_text("# FAQ\n\nAnswers.\n")
    (tmp_path / "secret.txt").write_text("password = hunter2\n")
    (tmp_path / "kb" / "notes.txt").symlink_to(tmp_path / "secret.txt")

    assert cli.main([str(tmp_path / "kb")]) == 0
    out = capsys.readouterr().out
    assert "1 added" in out and "  skipped notes.txt: symlink to a file outside kb/: not followed" in out


def test_file_timeout_is_an_option_with_a_default():
    assert cli.build_parser().parse_args(["kb"]).file_timeout == 60
    assert cli.build_parser().parse_args(["kb", "--file-timeout", "5"]).file_timeout == 5


@pytest.mark.parametrize("limit", ["--file-timeout", "--max-file-mb"])
@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "0", "-1", "ten"])
def test_a_limit_out_of_range_is_a_usage_error(tmp_path, capsys, limit, value):
    with pytest.raises(SystemExit) as stopped:
        cli.main([str(tmp_path), limit, value])
    assert stopped.value.code == 2 and limit in capsys.readouterr().err
