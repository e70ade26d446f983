"""Celery workers for auditor: thin tasks that parse arguments and call the library."""
