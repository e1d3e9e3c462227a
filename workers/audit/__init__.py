"""One audit of a model: plan (pairs and objectives), visualise, score and flag each pair, build the report.

Used in-process by ``quirkscope audit --embedded`` and ``make demo``, and step by step by the Celery tasks."""
