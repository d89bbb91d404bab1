"""Hostile and unlucky input: one bad file fails alone, quickly, with a reason, and never sinks the run."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest
from fakes import FakeEmbeddings, count_words, count_words_or_misbehave
from qdrant_client import QdrantClient
from test_ingest import write_tree
from test_loaders import fail, load, make_docx

from chatbot.core.config import Settings
from chatbot.core.errors import LoadError
from chatbot.llm.loading import embed_token_counter
from chatbot.rag.store import Store
from ingest import cli, loaders, pipeline
from ingest.clean import clean_mdx
from ingest.loaders import load_file
from ingest.pipeline import IngestReport, run_ingest
from ingest.split import ChunkerSettings
from ingest.worker import ReadLimits

SIZE = 1_000_000  # characters: the old patterns took from minutes to days on each of these

# Each repeated to SIZE: unclosed tags, comments and elements, and long lines of what a pattern looks for.
ADVERSARIAL = {
    "unclosed tags": "<a b ",
    "unclosed tags with values": '<a b="x" ',
    "unclosed quoted values": '<a x="<a y=" w w ',
    "unclosed html comments": "<!-- ",
    "unclosed mdx comments": "{/* ",
    "unclosed script elements": "<script> ",
    "unclosed tables": "<table> ",
    "unclosed code elements": "<code> ",
    "unended code tags": "<code ",
    "unclosed headings": "<h1> ",
    "unended heading tags": "<h2 ",
    "unclosed images": "![ ",
    "unclosed image targets": "![x](a(",
    "unclosed empty links": "[](x ",
    "import lines": "import\n",
    "import lines with a brace": "import {\n",
    "export lines": "export\n",
    "fence lines": "```\n",
    "inline code spans": "`a` ",
    "block tags on one line": "<div>x</div> ",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("unit", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_cleaning_is_linear_on_adversarial_markup(unit):
    text = unit * (SIZE // len(unit))
    assert isinstance(clean_mdx(text), str)


@pytest.mark.timeout(30)
def test_a_long_heading_line_with_an_id_is_cleaned_quickly(tmp_path):
    [doc] = load(tmp_path, "long.md", "# A" + " " * SIZE + "title {#anchor}\n\nBody.\n")
    assert doc.page_content.startswith("# A") and "{#anchor}" not in doc.page_content
    assert doc.metadata["title"].endswith("title")


@pytest.mark.timeout(30)
def test_a_heading_of_hashes_gives_its_title_quickly(tmp_path):
    [doc] = load(tmp_path, "hashes.md", "# " + "#" * SIZE + "x\n")
    assert doc.metadata["title"].endswith("#x")


def test_an_image_whose_target_holds_parentheses_is_dropped_whole():
    assert clean_mdx("Before ![map](https://x.org/Map_(2020).png) after") == "Before after"


# ---- bombs that used to raise past the run ----------------------------------------------------


def test_deeply_nested_json_is_a_load_error():
    assert "nested too deeply" in fail_json("[" * 100_000 + "]" * 100_000)


def fail_json(text: str) -> str:
    with pytest.raises(LoadError) as raised:
        loaders._parse_json(text)
    return str(raised.value)


def test_a_deeply_nested_json_line_names_its_line(tmp_path):
    message = fail(tmp_path, "deep.jsonl", '{"a": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    assert message.startswith("JSON nested too deeply to read on line 2")


def test_deeply_nested_front_matter_is_a_load_error(tmp_path):
    message = fail(tmp_path, "deep.md", "---\nx: " + "[" * 100_000 + "]" * 100_000 + "\n---\nBody.\n")
    assert "front matter is nested too deeply" in message


BILLION_LAUGHS = (
    '---\na: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    + "title: Laughs\n---\n# Body\n\nText.\n"
)


def test_front_matter_aliases_are_refused_with_the_line(tmp_path):
    message = fail(tmp_path, "laughs.md", BILLION_LAUGHS)
    assert message.startswith("the front matter uses a YAML alias (`*name`) on line 3")


# ---- zip bombs --------------------------------------------------------------------------------


def docx_with_extra_part(path: Path, size: int) -> Path:
    """A real .docx plus one part of `size` zero bytes, which deflate packs about a thousand times."""
    make_docx(path)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/media/padding.bin", "w", force_zip64=True) as part,
    ):
        for _ in range(size // 1_000_000):
            part.write(bytes(1_000_000))
    return path


def test_a_docx_bomb_is_refused_before_anything_is_inflated(tmp_path):
    bomb = docx_with_extra_part(tmp_path / "bomb.docx", 20_000_000)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(LoadError, match=r"part word/media/padding.bin unpacks \d+ times its packed size"):
        load_file(bomb, "bomb.docx")


def test_a_docx_that_unpacks_past_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "MAX_UNZIPPED_BYTES", 1_000_000)
    with pytest.raises(LoadError, match=r"unpacks to \d+ MB, over the 1 MB limit"):
        load_file(docx_with_extra_part(tmp_path / "big.docx", 2_000_000), "big.docx")


def test_a_docx_of_ordinary_size_still_loads(tmp_path):
    [doc] = load_file(make_docx(tmp_path / "fine.docx"), "fine.docx")
    assert "Unpack the box." in doc.page_content


# ---- the run: a budget per file, and no file sinks the others ---------------------------------


def run(root: Path, store: Store, **options) -> IngestReport:
    options.setdefault("count_tokens", count_words_or_misbehave)
    return run_ingest(
        [root],
        store=store,
        load_embeddings=FakeEmbeddings,
        embed_model="fake-words",
        chunker=ChunkerSettings(chunk_tokens=40, overlap_tokens=5),
        **options,
    )


@pytest.fixture
def store():
    # In memory only: these tests are about hostile files, not the store (tests/test_ingest.py covers both engines).
    store = Store(QdrantClient(location=":memory:"), "kb")
    yield store
    store.close()


def failed(report: IngestReport) -> dict[str, str]:
    return {item["path"]: item["error"] for item in report.failed}


GOOD = {"a.md": "# A\n\nThe first good page.\n", "z.md": "# Z\n\nThe last good page.\n"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dry_run", [False, True], ids=["ingest", "dry run"])
def test_a_file_over_its_time_budget_is_stopped_and_the_rest_land(tmp_path, store, dry_run):
    root = write_tree(tmp_path / "kb", {**GOOD, "m-slow.md": "# Slow\n\nHANG here.\n"})

    report = run(root, store, read_limits=ReadLimits(seconds=3), dry_run=dry_run)

    assert failed(report)["m-slow.md"].startswith("took longer than 3 s to read and split")
    assert sorted(report.added) == ["a.md", "z.md"]  # z.md was read by a fresh child
    assert dry_run or {entry["source"] for entry in store.manifest().values()} == {"a.md", "z.md"}


@pytest.mark.timeout(120)
def test_a_file_that_eats_memory_crashes_or_raises_fails_alone(tmp_path, store):
    pages = {
        "m-hog.md": "# Hog\n\nA HOG page.\n",
        "m-die.md": "# Die\n\nA DIE page.\n",
        "m-boom.md": "# Boom\n\nA BOOM page.\n",
    }
    root = write_tree(tmp_path / "kb", {**GOOD, **pages})

    report = run(root, store, read_limits=ReadLimits(memory_bytes=1024**3))

    errors = failed(report)
    assert errors["m-hog.md"].startswith("needed more than 1 GB of memory to read")
    assert errors["m-die.md"].startswith("the process reading it stopped (exit code 3)")
    assert errors["m-boom.md"].startswith("could not be read (ValueError: an unplanned failure)")
    assert sorted(report.added) == ["a.md", "z.md"] and {entry["source"] for entry in store.manifest().values()} == {
        "a.md",
        "z.md",
    }


def test_a_token_counter_that_cannot_be_pickled_still_works(tmp_path, store):
    report = run(write_tree(tmp_path / "kb", GOOD), store, count_tokens=lambda text: count_words(text))
    assert sorted(report.added) == ["a.md", "z.md"] and report.failed == []


def test_the_bundled_token_counter_pickles():
    count_tokens, _ = embed_token_counter(Settings())
    assert pickle.loads(pickle.dumps(count_tokens))("two words") == count_tokens("two words")


# ---- symlinks ---------------------------------------------------------------------------------


def test_links_are_never_followed_and_each_is_listed_with_why(tmp_path, store):
    secrets = write_tree(tmp_path / "home", {"credentials.txt": "aws_secret_access_key = hunter2\n"})
    root = write_tree(tmp_path / "kb", {**GOOD, "docs/guide.md": "# Guide\n\nRead me.\n"})
    (root / "faq.txt").symlink_to(secrets / "credentials.txt")
    (root / "home").symlink_to(secrets, target_is_directory=True)
    (root / "latest.md").symlink_to(root / "docs" / "guide.md")
    (root / "docs" / "again").symlink_to(root / "docs", target_is_directory=True)
    (root / "loop.md").symlink_to(root / "loop.md")
    (root / "gone.md").symlink_to(tmp_path / "nowhere.md")

    report = run(root, store)

    assert sorted(report.added) == ["a.md", "docs/guide.md", "z.md"]
    assert "hunter2" not in str([point.payload for point in store.records()])
    reasons = {item["path"]: item["reason"] for item in report.skipped}
    assert reasons == {
        "faq.txt": "symlink to a file outside kb/: not followed",
        "home": "symlink to a folder outside kb/: not followed",
        "latest.md": "symlink to the file docs/guide.md: not followed, so nothing is read twice",
        "docs/again": "symlink to the folder docs: not followed, so nothing is read twice",
        "loop.md": "symlink that is broken or loops: not followed",
        "gone.md": "symlink that is broken or loops: not followed",
    }


# ---- all of it at once, through rag-ingest ----------------------------------------------------


@pytest.mark.timeout(120)
def test_a_folder_of_hostile_files_ingests_its_good_page_and_lists_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_QDRANT_PATH", str(tmp_path / "qdrant"))
    monkeypatch.setattr(pipeline, "load_embeddings", lambda settings: FakeEmbeddings())
    root = write_tree(
        tmp_path / "kb",
        {
            "good.md": "# Returns\n\nYou can return an item within 30 days.\n",
            "tags.mdx": "<a b " * 60_000,
            "deep.json": "[" * 100_000 + "]" * 100_000,
            "deep-front-matter.md": "---\nx: " + "[" * 100_000 + "]" * 100_000 + "\n---\nBody.\n",
            "laughs.md": BILLION_LAUGHS,
        },
    )
    docx_with_extra_part(root / "bomb.docx", 20_000_000)
    write_tree(tmp_path / "home", {"credentials": "aws_secret_access_key = hunter2\n"})
    (root / "faq.txt").symlink_to(tmp_path / "home" / "credentials")

    assert cli.main([str(root), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)

    assert "Traceback" not in captured.err
    errors = {item["path"]: item["error"] for item in result["failed"]}
    assert set(errors) == {"deep.json", "deep-front-matter.md", "laughs.md", "bomb.docx"}
    assert "nested too deeply" in errors["deep.json"] and "nested too deeply" in errors["deep-front-matter.md"]
    assert "YAML alias" in errors["laughs.md"] and "zip bomb" in errors["bomb.docx"]
    assert {item["path"]: item["reason"] for item in result["skipped"]}["faq.txt"].startswith(
        "symlink to a file outside"
    )
    assert result["added"] == 2  # the unclosed tags are not markup, so they are kept as text (in seconds)
    store = Store.open(Settings.from_env())
    try:
        assert set(store.stored_sources()) == {"good.md", "tags.mdx"}
        [hit] = store.search_dense(FakeEmbeddings().embed_query("return an item within 30 days"), limit=1)
        assert hit.payload["source"] == "good.md"
    finally:
        store.close()


def test_a_document_cannot_expand_the_cleaners_own_placeholders():
    from ingest.clean import clean_mdx

    cleaned = clean_mdx("See \ue0001\ue001 here and `code` and `b`" + " \ue0000\ue001" * 2000)
    assert cleaned.startswith("See 1 here and `code` and `b`") and "`b` here" not in cleaned
    assert len(cleaned) < 20_000  # 2,000 markers do not each become a copy of a code span
