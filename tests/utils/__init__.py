"""Factories and helpers for tests."""
