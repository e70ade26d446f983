"""Tests of :mod:`auditor.report` (build, render, charts, near duplicates, drift)."""
