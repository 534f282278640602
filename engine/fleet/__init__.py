"""The worker fleet: ``casavi-sync worker`` processes on any number of machines, one PostgreSQL.

The state store (engine/state, PostgreSQL backend) and procrastinate's job tables share the
database; jobs.py defines the jobs, worker.py runs one worker process. docs/fleet.md explains the
design and the choice of procrastinate.
"""
