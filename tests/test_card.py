"""The adapter card: typed, validated when read, and written back without losing a key."""

import json
import shutil
from pathlib import Path

import pytest

from adapters.card import CARD_FILE, AdapterCard
from chatbot.core.errors import AdapterCardError
from chatbot.core.files import atomic_folder

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "adapters" / "support-rag"


def test_the_shipped_card_reads_typed_and_writes_back_the_same_json(tmp_path):
    card = AdapterCard.read(SHIPPED)
    assert card.name == "support-rag" and card.rank == 16 and card.first_token_bias
    assert "loss_curve" in card.extra and "eval" in card.extra  # keys this version does not model are kept

    card.write(tmp_path)
    assert json.loads((tmp_path / CARD_FILE).read_text()) == json.loads((SHIPPED / CARD_FILE).read_text())


def test_a_folder_without_a_card_has_an_empty_one(tmp_path):
    assert AdapterCard.read(tmp_path) == AdapterCard()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "cannot be read as JSON"),
        ("[1, 2]", "holds list, not an object"),
        ('{"first_token_bias": {"I don\'t know": "a lot"}}', "first_token_bias must map texts to numbers"),
        ('{"rank": "sixteen"}', "rank must be a whole number"),
        ('{"probe": [{"answer": "no messages"}]}', "probe must be a list"),
    ],
)
def test_a_malformed_card_names_its_file_and_the_problem(tmp_path, text, message):
    (tmp_path / CARD_FILE).write_text(text)
    with pytest.raises(AdapterCardError) as caught:
        AdapterCard.read(tmp_path)
    assert message in str(caught.value) and str(tmp_path / CARD_FILE) in str(caught.value)


def test_a_failed_folder_write_keeps_the_old_version_whole(tmp_path):
    target = tmp_path / "adapter"
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("v1")

    with pytest.raises(RuntimeError), atomic_folder(target, replace=True) as staging:
        (staging / "weights").write_text("v2, half")
        raise RuntimeError("killed mid-write")

    assert (target / "weights").read_text() == "v1"
    assert [path.name for path in tmp_path.iterdir()] == ["adapter"]  # no staging left behind

    with atomic_folder(target, replace=True) as staging:
        (staging / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2" and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_without_replace_a_full_folder_is_never_overwritten(tmp_path):
    target = tmp_path / "merged"
    shutil.copytree(SHIPPED, target)
    with pytest.raises(OSError), atomic_folder(target) as staging:
        (staging / "config.json").write_text("{}")
    assert (target / CARD_FILE).is_file() and not (target / "config.json").exists()
