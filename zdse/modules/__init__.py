"""Modules (Service classes): finding them by name, checking them, reading their options."""
