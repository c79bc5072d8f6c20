"""Damaged cases."""
