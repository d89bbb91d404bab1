"""Arena votes: the SQLite store under concurrent writers, the jsonl round trip, the leaderboard's statistics
on known cases, and `rag-eval --votes` reading votes against a question set's metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from chatbot.cli.evaluate import main as rag_eval
from chatbot.eval.disagree import disagreements
from chatbot.eval.questions import load_questions
from chatbot.eval.ratings import MIN_VOTES, fit, leaderboard
from chatbot.eval.vote_store import VoteStore
from chatbot.eval.votes import Outcome, Side, Vote, VoteStoreError, read_jsonl, to_jsonl
from chatbot.options import AnswerOptions

ROOT = Path(__file__).resolve().parents[1]
OFF, ON = AnswerOptions(use_retrieval=False), AnswerOptions()


def side(config: AnswerOptions | str, text: str = "An answer.", *, abstained: bool = False) -> Side:
    """A side with `config` (or just a label, for the statistics)."""
    options = config.to_json() if isinstance(config, AnswerOptions) else {"label": config}
    answer = {"text": text, "abstained": abstained, "citations_added": [], "sources": [], "timings": {"generate": 1.0}}
    return Side(options, None, answer)


def duel(a: str, b: str, wins: int, losses: int = 0, ties: int = 0) -> list[Vote]:
    """`a` against `b`: `wins` votes for a, `losses` for b, `ties` ties; `a` shown first, then second, in turn."""
    outcomes = [Outcome.A] * wins + [Outcome.B] * losses + [Outcome.TIE] * ties
    votes = []
    for n, outcome in enumerate(outcomes):
        if n % 2:  # shown the other way round: the vote follows the configuration, not the letter
            flipped = {Outcome.A: Outcome.B, Outcome.B: Outcome.A}.get(outcome, outcome)
            votes.append(Vote("q", side(b), side(a), flipped))
        else:
            votes.append(Vote("q", side(a), side(b), outcome))
    return votes


# -- the store ------------------------------------------------------------------------------


def test_the_store_is_a_wal_sqlite_file_that_keeps_every_field(tmp_path):
    store = VoteStore(tmp_path / "arena" / "votes.sqlite")
    vote = Vote(
        "How long do refunds take?",
        side(OFF, "Five days."),
        side(ON, "Refunds take 5 days [1]."),
        "tie",
        model={"name": "fake", "weights": {"files": "x"}},
        collection={"name": "kb", "fingerprint": {"dim": 16}},
        question_id="q1",
    )
    assert store.add(vote) and not store.add(vote)  # the same vote twice is stored once

    assert store.all() == [vote]
    assert store.count() == 1
    import sqlite3

    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.timeout(120)
def test_sessions_voting_at_once_in_threads_lose_nothing(tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite")
    errors = []

    def session(number: int) -> None:
        try:
            for _ in range(25):
                VoteStore(store.path).add(Vote(f"q{number}", side("x"), side("y"), "a"))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 200
    assert len({vote.id for vote in store.all()}) == 200


WRITER = """
import sys
from chatbot.eval.vote_store import VoteStore
from chatbot.eval.votes import Side, Vote
side = lambda label: Side({"label": label}, None, {"text": "", "abstained": False, "citations_added": [], "sources": []})
store = VoteStore(sys.argv[1])
sys.stdin.readline()  # start together
for n in range(60):
    store.add(Vote(f"{sys.argv[2]}-{n}", side("x"), side("y"), "b"))
"""


@pytest.mark.timeout(120)
def test_two_processes_voting_at_once_lose_nothing(tmp_path):
    path = tmp_path / "votes.sqlite"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], cwd=ROOT, stdin=subprocess.PIPE, text=True)
        for name in ("one", "two")
    ]
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    assert [writer.wait(timeout=100) for writer in writers] == [0, 0]
    questions = sorted(vote.question for vote in VoteStore(path).all())
    assert questions == sorted(f"{name}-{n}" for name in ("one", "two") for n in range(60))


def test_export_and_import_round_trip(tmp_path):
    store = VoteStore(tmp_path / "one.sqlite")
    votes = [*duel("A", "B", 2, 1), Vote("q", side(ON, "yes"), side(OFF, "no"), "both_bad", question_id="q7")]
    for vote in votes:
        store.add(vote)
    exported = tmp_path / "votes.jsonl"
    exported.write_text(store.export_jsonl())

    other = VoteStore(tmp_path / "two.sqlite")
    assert other.import_jsonl(exported) == 4
    assert other.import_jsonl(exported) == 0  # importing again adds nothing
    assert other.all() == store.all() == read_jsonl(exported)
    assert [json.loads(line)["outcome"] for line in exported.read_text().splitlines()] == ["a", "b", "b", "both_bad"]


def test_a_bad_line_in_an_import_is_named(tmp_path):
    path = tmp_path / "votes.jsonl"
    path.write_text(to_jsonl(duel("A", "B", 1)) + '{"version": 1, "id": "x"}\n')
    with pytest.raises(VoteStoreError, match=r"votes.jsonl, line 2: not a vote \(missing 'question'\)"):
        read_jsonl(path)


def test_an_unwritable_votes_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(VoteStoreError, match="point RAG_CACHE_DIR at a writable local folder"):
        VoteStore(blocker / "arena" / "votes.sqlite")


# -- statistics -----------------------------------------------------------------------------


def test_a_known_ranking_is_recovered():
    board = leaderboard(duel("A", "B", 8, 2) + duel("B", "C", 8, 2))
    assert [s.label for s in board.standings] == ["A", "B", "C"]
    a, b, c = board.standings
    assert a.rating > b.rating > c.rating
    assert [s.win_rate for s in board.standings] == [0.8, 0.5, 0.2]
    assert (a.wins, a.losses, b.votes, c.losses) == (8, 2, 20, 8)
    assert all(s.low <= s.rating <= s.high for s in board.standings)
    assert leaderboard(duel("A", "B", 8, 2) + duel("B", "C", 8, 2)) == board  # seeded: the same table every time


def test_many_votes_rank_apart_and_say_so():
    board = leaderboard(duel("A", "B", 32, 8) + duel("B", "C", 32, 8))
    assert board.apart >= {("A", "B"), ("B", "C"), ("A", "C")}
    assert board.note == "Ranked at 95%: 'A' > 'B' > 'C'."


def test_the_bradley_terry_fit_matches_its_closed_form():
    # Two players, 8-2: strengths in the ratio of their wins, p_A / p_B = 4.
    strengths = fit(np.array([[0.0, 8.0], [2.0, 0.0]]), prior=0)
    assert strengths[0] - strengths[1] == pytest.approx(np.log(4), abs=1e-6)


def test_the_fit_is_where_expected_wins_equal_observed_wins():
    # The likelihood's score equations: for each configuration, the wins the model expects (against the others,
    # and half of each virtual game against the reference of strength 1) equal the wins it scored.
    wins = np.random.default_rng(5).integers(0, 9, size=(4, 4)).astype(float)
    np.fill_diagonal(wins, 0)
    theta = fit(wins, prior=1.0)
    beats = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))
    expected = ((wins + wins.T) * beats).sum(axis=1) + 1 / (1 + np.exp(-theta))
    assert expected == pytest.approx(wins.sum(axis=1) + 0.5, abs=1e-8)


def test_a_configuration_that_never_loses_keeps_a_finite_rating():
    board = leaderboard(duel("A", "B", 30) + duel("A", "C", 30) + duel("B", "C", 5, 5))
    a = board.standings[0]
    assert a.label == "A" and a.losses == 0
    assert all(np.isfinite([s.rating, s.low, s.high]).all() for s in board.standings)
    assert ("A", "B") in board.apart


def test_too_few_votes_are_too_wide_to_rank():
    board = leaderboard(duel("A", "B", 2, 1))
    assert board.apart == set()
    assert board.note.startswith("Too wide to rank: with 3 votes")
    unanimous = leaderboard(duel("A", "B", MIN_VOTES - 1))  # every resample alike: the interval alone would rank
    assert unanimous.apart == set() and "Too wide to rank" in unanimous.note


def test_ties_and_both_bad_count_half_each_way():
    votes = duel("A", "B", 0, ties=4) + [Vote("q", side("A"), side("B"), "both_bad")] * 2
    a, b = leaderboard(votes).standings
    assert a.rating == pytest.approx(b.rating)
    assert (a.ties, a.both_bad, a.win_rate) == (4, 2, 0.5)


def test_the_note_names_what_can_and_cannot_be_ranked():
    board = leaderboard(duel("A", "B", 40, 5) + duel("B", "C", 20, 20) + duel("A", "C", 40, 5))
    first, second = sorted(("B", "C"), key=lambda label: -next(s.rating for s in board.standings if s.label == label))
    assert board.note == (
        f"Ranked at 95%: 'A' is ahead of '{first}', '{second}'. Too close to rank: '{first}' and '{second}' "
        "(their intervals overlap too much: vote more)."
    )
    assert [row["rank"] for row in board.rows()] == [1, 2, 2]


def test_no_votes_says_so():
    assert leaderboard([]).note.startswith("No votes yet")


# -- people against the metrics -------------------------------------------------------------

QUESTIONS = [
    {"id": "q1", "question": "How long do refunds take?", "answer": "5 days.", "must_include": ["5 days"],
     "source": "refunds.md", "kind": "fact"},
    {"id": "q2", "question": "What colour is the logo?", "answer": "Not covered.", "must_include": [],
     "source": None, "kind": "unanswerable"},
]  # fmt: skip


@pytest.fixture
def question_set(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in QUESTIONS))
    return path


def mixed_votes() -> list[Vote]:
    right, wrong = "Refunds take 5 days.", "Refunds take a while."
    return [
        Vote("How long do refunds take?", side(ON, right), side(OFF, wrong), "a"),  # agree
        Vote("how long do refunds  take?", side(OFF, wrong), side(ON, right), "a"),  # people prefer the miss
        Vote("What colour is the logo?", side(ON, "I don't know."), side(OFF, "Blue."), "b"),  # prefer no refusal
        Vote("What colour is the logo?", side(ON, "Blue."), side(OFF, "Green."), "tie"),  # neither
        Vote("Not in the set?", side(ON), side(OFF), "a"),
    ]


def test_votes_are_read_against_the_metrics(question_set):
    found = disagreements(mixed_votes(), load_questions(question_set))
    assert found.unmatched == 1
    assert [(r.question.id, r.measure, r.verdict) for r in found.readings] == [
        ("q1", "recall", "agree"),
        ("q1", "recall", "disagree"),
        ("q2", "refusal", "disagree"),
        ("q2", "refusal", "neither"),
    ]
    assert found.by_pair()[tuple(sorted((ON.label, OFF.label)))]["disagree"] == 2


def test_rag_eval_votes_prints_where_people_and_metrics_disagree(question_set, tmp_path, capsys):
    path = tmp_path / "votes.jsonl"
    path.write_text(to_jsonl(mixed_votes()))
    assert rag_eval([str(question_set), "--votes", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 of 5 votes are on questions of the set." in out
    assert f"- q1 (recall): people preferred '{OFF.label}' (0.00) over '{ON.label}' (1.00)" in out

    store = VoteStore(tmp_path / "votes.sqlite")  # the store itself reads the same
    store.import_jsonl(path)
    assert rag_eval([str(question_set), "--votes", str(store.path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["not_in_question_set"] == 1
    assert [item["question_id"] for item in summary["disagreements"]] == ["q1", "q2"]


def test_rag_eval_votes_names_a_missing_file(question_set, tmp_path, capsys):
    assert rag_eval([str(question_set), "--votes", str(tmp_path / "nope.jsonl")]) == 1
    assert "Cannot read votes from" in capsys.readouterr().err
