"""bench/eval_retrieval.py reads the ingested chunks back from the default engine (Qdrant Edge)."""

import importlib
import os
import sys
from pathlib import Path

import pytest

from chatbot.core.config import Settings
from tests.fakes import FakeEmbeddings

PAGES = {
    "billing.md": "# Billing\n\n## Invoices\n\nDownload invoices from the billing page.\n",
    "sites.md": "# Sites\n\n## Add a site\n\nPaste the snippet into your site's head.\n",
}


@pytest.fixture(scope="module")
def eval_retrieval():
    """The bench script as a module. Its `common` sets TQDM_DISABLE and offline flags for benchmark runs:
    the environment is put back after the import, and tqdm is imported first, so later tests keep their progress bars."""
    import tqdm  # noqa: F401  (reads TQDM_* once, at its import)

    saved = dict(os.environ)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the bench's scripts import `common`
    try:
        yield importlib.import_module("eval_retrieval")
    finally:
        sys.path.remove(str(Path(__file__).resolve().parents[1] / "bench"))
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.timeout(120)
def test_the_quality_bench_copies_an_edge_collection_and_its_variants_find_the_page(tmp_path, eval_retrieval):
    kb = tmp_path / "kb"
    kb.mkdir()
    for name, text in PAGES.items():
        (kb / name).write_text(text)
    embeddings = eval_retrieval.CachedEmbeddings(FakeEmbeddings())
    collection = eval_retrieval.build_collection(kb, tmp_path / "store", embeddings, Settings())

    assert {p.payload["source"] for p in collection.points} == set(PAGES)
    assert all(store.count() == len(collection.points) for store in collection.stores.values())
    for config in (eval_retrieval.AFTER, *eval_retrieval.TRIED):
        found = eval_retrieval.retriever(collection, embeddings, config).retrieve("download invoices billing", k=2)
        assert found[0].source == "billing.md", config.name
