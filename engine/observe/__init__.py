"""Observability: Prometheus metrics, health/readiness, signed webhook alerts, the customer notice.

Why a package of its own: ``serve``, the workers and the web console all expose the same metrics
and health endpoints and fire the same alerts, and the sync itself must not know who listens.
The sync calls exactly one function, :func:`engine.observe.hooks.run_finished`, with the run's
report; whoever wants to know (metrics, alerts) registers a listener there.

::

    sync (session.py) --run_finished(report)--> hooks --> metrics.RunMetrics.observe_run
                                                      \\-> webhook.Alerter.on_run
    server.ObserveServer: GET /metrics, /healthz, /readyz (a thread beside serve/worker/web)
    notice: the German data-quality notice (text and HTML), messages in catalog/notice.de.yaml
"""
