"""billing: metering, attribution, ledger and the budget policy API.

Imports none of costctl/, scheduler/ or dashboard/ (see docs/ARCHITECTURE.md).
"""
