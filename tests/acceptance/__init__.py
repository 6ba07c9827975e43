"""Acceptance suite (table below)."""
