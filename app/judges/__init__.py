"""Judges: AI feedback measured against humans."""
