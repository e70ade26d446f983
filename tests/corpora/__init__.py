"""Tests of auditor.corpora."""
