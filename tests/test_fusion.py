"""Fusion, the per-page cap, MMR and stemmed keywords: worked examples, and the real store where it matters."""

from __future__ import annotations

import uuid

import pytest
from fakes import FakeEmbeddings
from qdrant_client import QdrantClient
from test_retrieval import fill, write_tree

from chatbot.core.errors import FingerprintMismatchError
from chatbot.rag import sparse
from chatbot.rag.retrieval import Fusion, Ranked, Retriever, fuse, limit_per_source, mmr_order
from chatbot.rag.store import ChunkPoint, Match, Store
from ingest.pipeline import run_ingest


def match(key: str, score: float, dense: list[float], source: str | None = None) -> Match:
    return Match(key, score, {"source": source or f"{key}.md", "text": key}, dense)


QUERY = [1.0, 0.0]


def unit(cosine: float) -> list[float]:
    return [cosine, (1 - cosine * cosine) ** 0.5]


def test_score_fusion_keeps_a_strong_dense_hit_above_a_weak_keyword_only_one():
    dense = [match("right", 0.80, unit(0.80)), match("near", 0.60, unit(0.60))]
    keyword = [match("noise", 2.0, unit(0.30)), match("near", 1.0, unit(0.60))]

    ranked = fuse(dense, keyword, QUERY, fusion=Fusion.SCORE, weight=0.1)

    assert [item.match.id for item in ranked] == ["right", "near", "noise"]
    assert ranked[0].score == pytest.approx(0.80)  # no keyword score: its cosine alone
    assert ranked[1].score == pytest.approx(0.60 + 0.1 * 0.5)  # half the best keyword score
    assert [item.cosine for item in ranked] == pytest.approx([0.80, 0.60, 0.30])  # for every candidate


def test_plain_rrf_lets_the_keyword_list_pull_the_right_dense_hit_down():
    dense = [match("right", 0.80, unit(0.80)), match("near", 0.60, unit(0.60))]
    keyword = [match("near", 2.0, unit(0.60)), match("noise", 1.0, unit(0.30))]

    assert fuse(dense, keyword, QUERY, fusion=Fusion.RRF, weight=1.0)[0].match.id == "near"
    assert fuse(dense, keyword, QUERY, fusion=Fusion.RRF, weight=0.3)[0].match.id == "right"  # weighted
    assert [item.score for item in fuse(dense, [], QUERY)] == pytest.approx([0.80, 0.60])  # no keywords: cosine


def test_a_keyword_match_breaks_a_near_tie_in_cosine():
    dense = [match("a", 0.62, unit(0.62)), match("b", 0.60, unit(0.60))]
    keyword = [match("b", 3.0, unit(0.60))]

    assert [item.match.id for item in fuse(dense, keyword, QUERY, fusion=Fusion.SCORE, weight=0.1)] == ["b", "a"]


def ranked(*sources: str) -> list[Ranked]:
    return [Ranked(match(f"c{n}", 1.0, unit(0.5), source), 1.0 - n / 100, 0.5) for n, source in enumerate(sources)]


def test_the_per_page_cap_makes_room_for_other_pages():
    items = ranked("billing.md", "billing.md", "billing.md", "plans.md", "billing.md", "refunds.md")

    chosen = limit_per_source(items, 4, 2)

    assert [item.match.payload["source"] for item in chosen] == ["billing.md", "billing.md", "plans.md", "refunds.md"]
    assert [item.match.id for item in limit_per_source(items, 4, None)] == ["c0", "c1", "c2", "c3"]


def test_the_capped_page_fills_the_list_when_nothing_else_qualifies():
    items = ranked("billing.md", "billing.md", "billing.md", "plans.md", "billing.md")
    assert [item.match.id for item in limit_per_source(items, 2, 1)] == ["c0", "c3"]

    chosen = limit_per_source(items, 5, 1)

    assert [item.match.id for item in chosen] == ["c0", "c1", "c2", "c3", "c4"]  # all of them, best first


def test_mmr_prefers_a_different_chunk_to_a_near_duplicate():
    items = [
        Ranked(match("first", 1.0, [1.0, 0.0]), 0.5, 0.9),
        Ranked(match("twin", 1.0, [1.0, 0.0]), 0.33, 0.89),
        Ranked(match("other", 1.0, [0.0, 1.0]), 0.25, 0.8),
    ]

    assert [item.match.id for item in mmr_order(items, diversity=0.5)] == ["first", "other", "twin"]
    assert [item.match.id for item in mmr_order(items, diversity=0.0)] == ["first", "twin", "other"]


def test_stemmed_keywords_match_across_inflections():
    stemmed = sparse.terms("Cancelled subscriptions", stem=True)
    assert stemmed == sparse.terms("cancel subscription", stem=True) == ["cancel", "subscript"]
    assert sparse.terms("Cancelled subscriptions") == ["cancelled", "subscriptions"]  # the default: words
    query = sparse.query_vector("cancelling my subscriptions", stem=True)
    assert query == sparse.query_vector("cancel subscription", stem=True)
    assert sparse.terms("Error PW-4021 printing", stem=True) == ["error", "pw", "4021", "print"]  # codes survive


def test_hybrid_with_stemmed_vectors_finds_the_page_that_uses_another_inflection():
    # The embedding (bag of exact words) sees none of the page's words in the query; only stemmed keywords do.
    store = Store(QdrantClient(location=":memory:"), "kb")
    store.create({"embed_model": "fake", "dim": 16})
    embeddings = FakeEmbeddings()
    pages = {"cancel.md": "You can cancel your subscription.", "other.md": "Labels print on a thermal printer."}
    store.upsert(
        ChunkPoint(
            str(uuid.UUID(int=n)),
            embeddings.embed_query(text),
            sparse.document_vector(text, stem=True),
            {"source": name, "text": text},
        )
        for n, (name, text) in enumerate(pages.items())
    )
    stemmed = Retriever(store, embeddings, keywords=lambda text: sparse.query_vector(text, stem=True))

    assert stemmed.retrieve("cancelling subscriptions", k=1)[0].source == "cancel.md"
    assert store.search_sparse(sparse.query_vector("cancelling subscriptions"), limit=2) == []  # words: no match
    store.close()


def test_a_collection_with_the_old_keyword_scheme_asks_to_be_rebuilt(tmp_path):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "a.md").write_text("# A\n\nSome text.\n")
    store = Store(QdrantClient(location=":memory:"), "kb")
    options = {"load_embeddings": FakeEmbeddings, "embed_model": "fake", "count_tokens": len}
    run_ingest([tmp_path / "kb"], store=store, **options)
    store.client.update_collection(
        "kb", metadata={"ragtune_fingerprint": {**store.fingerprint(), "sparse": "tf-idf-0"}}
    )

    with pytest.raises(FingerprintMismatchError) as caught:
        run_ingest([tmp_path / "kb"], store=store, **options)

    message = str(caught.value)
    assert "keyword vectors of the scheme 'tf-idf-0'" in message and f"'tf-idf-{sparse.SCHEME}'" in message
    assert "rag-ingest --recreate" in message
    run_ingest([tmp_path / "kb"], store=store, recreate=True, **options)  # what the message says to do
    assert store.fingerprint()["sparse"] == f"tf-idf-{sparse.SCHEME}"
    store.close()


def test_the_store_searches_each_list_alone_and_keeps_small_records(tmp_path):
    store = Store(QdrantClient(location=":memory:"), "kb")
    fill(
        store,
        write_tree(tmp_path / "kb", {"a.md": "# A\n\nRefunds go to the wallet.\n", "b.md": "# B\n\nLabels.\n"}),
        FakeEmbeddings(),
    )
    query = FakeEmbeddings().embed_query("refunds wallet")

    [dense] = store.search_dense(query, limit=1)
    [keyword] = store.search_sparse(sparse.query_vector("refunds"), limit=5, where={"source": ["a.md"]})

    assert dense.payload["source"] == keyword.payload["source"] == "a.md" and len(keyword.dense) == 16
    assert store.search_sparse(sparse.query_vector("the and of"), limit=5) == []  # stop words only: no list
    assert store.metadata_value("ragtune_note") is None
    store.set_metadata_value("ragtune_note", {"cut": 0.5})
    assert store.metadata_value("ragtune_note") == {"cut": 0.5} and store.manifest()  # the manifest is kept
    store.close()
