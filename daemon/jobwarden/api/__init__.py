"""The HTTP API (aiohttp): health now; metrics, ingest and admin in later features."""
