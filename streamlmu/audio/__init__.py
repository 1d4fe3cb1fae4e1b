"""Audio front end: features, sources and keyword detection."""
