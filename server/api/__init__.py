"""REST API routes under /api/v1 (FastAPI, on the same app as the pages)."""
