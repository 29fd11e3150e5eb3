"""The HTTP API (FastAPI): ingestion, costs, and (with enforcement) budgets and kill-switches."""
