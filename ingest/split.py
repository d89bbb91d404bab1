"""Split documents into chunks that respect structure and fit the embedding model's window.

Markdown-like text is cut on headings first, so a chunk never straddles two
sections; each section is then cut by size, measured in the embedding model's
own tokens, with some overlap. The heading path ("Title > Section > Sub") is
prepended to the text that is embedded, and counted against the window, so a
chunk is self-describing and is never silently truncated by the model.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from langchain_core.documents import Document
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from chatbot.core.text import heading_path

CHUNKER_VERSION = 1
_HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]
_STRUCTURED_FORMATS = {"markdown", "html", "docx", "text"}
_MIN_CHUNK_TOKENS = 32

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class ChunkerSettings:
    """How text is cut: `chunk_tokens` is the whole embedded text's budget, heading path included."""

    chunk_tokens: int = 254  # all-MiniLM-L6-v2 reads 256 tokens, two of them [CLS] and [SEP]
    overlap_tokens: int = 32

    def fingerprint(self) -> dict[str, int]:
        """What a collection records, so chunks cut differently are never mixed."""
        return {**asdict(self), "version": CHUNKER_VERSION}


def embed_text(chunk: Document) -> str:
    """The text that is embedded for a chunk: its heading path, then its text."""
    return f"{heading_path(chunk.metadata['title'], chunk.metadata['section'])}\n{chunk.page_content}"


def split_documents(
    documents: Iterable[Document], count_tokens: TokenCounter, chunker: ChunkerSettings
) -> list[Document]:
    """Cut documents into chunks with `section`, `chunk_index` (per source) and `content_hash`."""
    chunks: list[Document] = []
    next_index: Counter[str] = Counter()
    for document in documents:
        title = document.metadata["title"]
        for section, text in _sections(document):
            prefix_tokens = count_tokens(heading_path(title, section) + "\n")
            budget = max(chunker.chunk_tokens - prefix_tokens, _MIN_CHUNK_TOKENS)
            splitter = RecursiveCharacterTextSplitter(
                chunk_size=budget,
                chunk_overlap=min(chunker.overlap_tokens, budget // 4),
                length_function=count_tokens,
                separators=["\n\n", "\n", ". ", " ", ""],
            )
            for piece in splitter.split_text(text):
                source = document.metadata["source"]
                chunk = Document(
                    page_content=piece,
                    metadata={**document.metadata, "section": section, "chunk_index": next_index[source]},
                )
                chunk.metadata["content_hash"] = hashlib.sha256(embed_text(chunk).encode()).hexdigest()[:16]
                next_index[source] += 1
                chunks.append(chunk)
    return chunks


def _sections(document: Document) -> list[tuple[str, str]]:
    """(heading path below the title, text) pairs; records and pages are one section each."""
    if document.metadata.get("format") not in _STRUCTURED_FORMATS:
        return [("", document.page_content)]
    title = document.metadata["title"]
    splitter = MarkdownHeaderTextSplitter(headers_to_split_on=_HEADINGS, strip_headers=True)
    sections = []
    for part in splitter.split_text(document.page_content):
        names = [part.metadata[key] for _, key in _HEADINGS if key in part.metadata]
        if names and names[0].strip().lower() == title.strip().lower():
            names = names[1:]  # the page's own "# Title" adds nothing to the path
        if part.page_content.strip():
            sections.append((" > ".join(names), part.page_content))
    return sections
