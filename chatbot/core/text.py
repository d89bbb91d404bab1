"""Text helpers that both ingestion and chat need."""


def heading_path(title: str, section: str) -> str:
    """'Title > Section > Sub', or just the title: where a chunk sits in its page."""
    return f"{title} > {section}" if section else title
