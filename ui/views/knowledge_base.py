"""Knowledge base: what the collection holds, uploads, and an incremental re-ingest that shows its plan first.

Ingestion runs through the engine's own open store and embedding model: a local
Qdrant folder is locked to one process, and this server process already holds it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import streamlit as st

from ingest.pipeline import IngestReport, ingest_paths
from ui import uploads
from ui.common import app_settings, engine_or_stop, ingest_lock, run_guarded, show_error
from ui.safe_markdown import code_span
from ui.uploads import MAX_UPLOAD_MB, SavedUpload, UploadError, save_upload

PHASES = {"hash": "Checking files", "load": "Reading files", "embed": "Embedding chunks"}


def saved_message(name: str, saved: SavedUpload, kb_dir: Path) -> str:
    """'Saved `uploads/faq.md`.', saying when the name was changed or an earlier file replaced."""
    message = f"Saved {code_span(saved.path.relative_to(kb_dir.resolve()).as_posix())}"
    if saved.renamed:
        limit = uploads.MAX_NAME_BYTES
        message += f" (uploaded as {code_span(name)}: names keep letters, digits and . _ - only, up to {limit} bytes)"
    return message + (", replacing the file of that name." if saved.replaced else ".")


st.set_page_config(page_title="ragtune · Knowledge base")
st.title("Knowledge base")
engine = engine_or_stop()

stats = run_guarded(engine.store.stats)
if stats is None:
    st.stop()
updated = datetime.fromisoformat(stats["updated"]).strftime("%d %b, %H:%M") if stats["updated"] else "never"
documents, chunks, last = st.columns(3)
documents.metric("Documents", len(stats["sources"]))
chunks.metric("Chunks", stats["chunks"])
last.metric("Last ingest", updated, help="UTC")
st.caption(f"Collection `{stats['collection']}` · embedded with {stats['embedding'] or 'nothing yet'}")
manifest = engine.store.manifest()
if stats["sources"]:
    with st.expander(f"Sources ({len(stats['sources'])})", icon=":material/description:"):
        # Two folders may each hold a guide.md: the folder tells them apart.
        rows = [{"source": e["source"], "folder": e["root"], "chunks": e["chunks"]} for e in manifest.values()]
        rows.sort(key=lambda row: (row["source"], row["folder"]))
        st.dataframe(rows, hide_index=True, width="stretch")


# Only folders the server already knows, never a typed path: those the collection was built from, and data/kb.
# A file ingested alone records its parent as root (maybe a home folder): that one is not offered.
folders = [*(entry["root"] for entry in manifest.values() if entry.get("folder")), str(uploads.KB_DIR.resolve())]
folders = [folder for folder in dict.fromkeys(folders) if folder and Path(folder).is_dir()] or folders[-1:]
kb_dir = Path(st.selectbox("Knowledge-base folder", folders, help="Uploads go here; re-ingest reads it"))

st.subheader("Add documents")
with st.form("upload", clear_on_submit=True, border=False):
    files = st.file_uploader(
        f"Files go to {code_span(f'{kb_dir.name}/{uploads.UPLOADS}/')}; re-ingest to make them searchable.",
        accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB,
        help=f"{', '.join(s.lstrip('.') for s in uploads.ALLOWED_SUFFIXES)}; up to {MAX_UPLOAD_MB} MB each",
    )
    if st.form_submit_button("Add to the knowledge base", icon=":material/upload:"):
        for file in files or []:
            try:
                saved = save_upload(file.name, file.getvalue(), kb_dir)
            except UploadError as error:
                show_error(error)
            else:
                st.success(saved_message(file.name, saved, kb_dir), icon=":material/check:")


def ingest(*, dry_run: bool, progress=None) -> IngestReport | None:
    """Bring the collection in line with the knowledge-base folder (or, dry, say what that would do)."""
    lock = ingest_lock()
    if not lock.acquire(blocking=False):
        st.warning("Another session is ingesting right now: try again in a moment.")
        return None
    try:
        return run_guarded(
            lambda: ingest_paths(
                [kb_dir],
                app_settings(),
                store=engine.store,
                embeddings=engine.retriever.embeddings,
                dry_run=dry_run,
                progress=progress,
            )
        )
    finally:
        lock.release()


def show_counts(report: IngestReport) -> None:
    for column, name in zip(st.columns(4), ("added", "changed", "removed", "unchanged"), strict=True):
        column.metric(name.capitalize(), len(getattr(report, name)))
    listed = [(name, getattr(report, name)) for name in ("added", "changed", "removed")]
    if any(paths for _, paths in listed):
        with st.expander("Files"):
            for name, paths in listed:
                for path in paths:
                    st.markdown(f"- {name}: {code_span(path)}")
    for failure in report.failed:
        show_error(f"{code_span(failure['path'])}: {failure['error']}")


st.subheader("Re-ingest")
st.caption(f"Only added or changed files are embedded; files deleted from {code_span(kb_dir)} are removed.")
if not kb_dir.is_dir():
    st.warning(f"The knowledge-base folder {code_span(kb_dir)} does not exist: upload a file or create it.")
    st.stop()

if result := st.session_state.pop("ingest_result", None):
    embedded = f"{result.chunks} chunk{'s' * (result.chunks != 1)} embedded"
    st.success(f"Re-ingested in {result.seconds:.1f} s: {embedded}.", icon=":material/check:")
    show_counts(result)

if st.button("Check for changes", icon=":material/difference:"):
    st.session_state.ingest_plan = (kb_dir, ingest(dry_run=True))

planned_dir, plan = st.session_state.get("ingest_plan", (None, None))
if plan is not None and planned_dir == kb_dir:
    show_counts(plan)
    if not (plan.added or plan.changed or plan.removed):
        st.info("Nothing to do: the collection matches the folder.", icon=":material/check:")
    elif st.button("Re-ingest", type="primary", icon=":material/sync:"):
        bar = st.progress(0.0, text="Starting...")
        report = ingest(
            dry_run=False,
            progress=lambda phase, done, total: bar.progress(
                done / max(total, 1), text=f"{PHASES.get(phase, phase)}: {done} of {total}"
            ),
        )
        bar.empty()
        del st.session_state.ingest_plan
        if report is not None:
            st.session_state.ingest_result = report
            st.rerun()  # redraw the counts at the top
