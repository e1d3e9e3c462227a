"""QuirkScope workers: the visualisation engine (``workers.engine``) and, later, the Celery tasks around it."""
