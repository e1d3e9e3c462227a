"""gunicorn settings of the API process: `gunicorn -c deploy/gunicorn.conf.py "service.app:create_app()"`.
The web process never imports torch, so preloading the app before forking is safe; the SQLAlchemy pool
is created lazily per worker (post_fork disposes anything inherited)."""
import multiprocessing
import os

bind = os.environ.get("QUIRKSCOPE_BIND", "0.0.0.0:8000")
# gthread workers: the GIL lets one process use one core at most, so as many processes as cores (at least two, so
# that one busy or restarting process does not stall the API); threads only overlap the waits on PostgreSQL and the
# network (a report read waits a fifth of its time or less), so a few per process suffice. More processes than cores,
# on a small box that also runs PostgreSQL, Redis and the workers, add context switches and memory, not throughput.
workers = int(os.environ.get("QUIRKSCOPE_WEB_WORKERS", min(8, max(2, multiprocessing.cpu_count()))))
threads = int(os.environ.get("QUIRKSCOPE_WEB_THREADS", 4))
worker_class = "gthread"
timeout = 120  # bundle uploads can be large
graceful_timeout = 30
keepalive = 5
preload_app = True
# One line per request on stdout (the container's log; docker-compose has no proxy in front that would log it
# instead). Formatting it costs about 0.3 ms of CPU a request (tests/benchmarks/load.py, docs/reliability.md 5):
# QUIRKSCOPE_ACCESS_LOG=off turns it off where a proxy or load balancer already logs each request, or a path
# writes it to a file.
_access_log = os.environ.get("QUIRKSCOPE_ACCESS_LOG", "-")
accesslog = None if _access_log.lower() in ("off", "") else _access_log
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_fork(server, worker):  # noqa: ARG001 - gunicorn hook signature
    app = getattr(server, "app", None)
    wsgi = getattr(app, "callable", None)
    if wsgi is not None and "quirkscope_db" in getattr(wsgi, "extensions", {}):
        wsgi.extensions["quirkscope_db"].dispose_after_fork()
