"""The Celery tasks of an audit (DESIGN 1, 5). Thin: load rows, call ``workers.audit.pipeline``, store.

    start_audit (cpu)  plan the objectives, store the work items, fan out:
      chord(visualise_chunk (gpu) x chunks) -> advance_audit (cpu)
      chord(evaluate_pair (gpu) x pairs)    -> advance_audit     every model evaluation of a pair
      chord(score_pair (cpu) x pairs)       -> advance_audit     pure maths on the stored evidence + rendering
      render_report (cpu) -> finalize_audit (cpu)

``advance_audit`` moves the audit's ``stage`` by a conditional UPDATE, so it may fire any number of
times (chord callback, a re-enqueued task, the reaper) and each stage still starts once. Every task runs
its work item through ``workers.tasks.runner.run_item`` (claim, heartbeat, retry, give up); torch is only
imported inside task bodies, never when the web process or the worker's main process loads this module.
"""
from __future__ import annotations

# Importing the package registers every task: the flow control and the stage tasks.
from workers.tasks import flow, stages  # noqa: F401
from workers.tasks.flow import advance_audit, finalize_audit  # noqa: F401
from workers.tasks.stages import evaluate_pair, render_report, score_pair, start_audit, visualise_chunk  # noqa: F401
