"""Filter a dataset's rows with a safe ``--keep`` expression (:mod:`auditor.filter.expression`)."""
