"""Foundation: settings, errors and the text helpers that ingestion and chat share."""
