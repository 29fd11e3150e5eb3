"""Scheduled jobs run by `costctl worker`: exactly one run per job and slot across workers.

- ``schedule``: pure, when a job's slots fall (every N seconds, epoch-aligned; weekly).
- ``locks``: one lock per job across processes (PostgreSQL advisory lock; SQLite file lock).
- ``runs``: the ``job_run`` table (every run, its worker, slot and outcome).
- ``runner``: ``JobRunner.tick(spec)`` — take the job's lock, run the latest slot if no
  finished run covers it, record the run.
"""
