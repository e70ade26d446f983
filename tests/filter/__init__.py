"""Tests of auditor.filter."""
