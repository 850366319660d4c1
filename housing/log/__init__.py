"""The prediction log, the one owner of every table the service writes: priced houses, feedback, traffic,
reload requests and worker reports, and the retraining job's state.

- :mod:`housing.log.schema`: the tables and their versioned migrations, defined once for every engine;
- :mod:`housing.log.store`: where the log lives (an embedded SQLite file, or PostgreSQL shared by replicas);
- :mod:`housing.log.writer`: the request path's hand-off, the background writer, retention and feedback writes;
- :mod:`housing.log.queries`: every read (accuracy and coverage, the drift sample, labelled houses for
  training, traffic, the insights' window), the feedback-to-prediction join written once;
- :mod:`housing.log.reloads`: reload requests and each worker's report, which roll a model out to the workers;
- :mod:`housing.log.job_records`: each retraining job's record (housing.jobs starts the jobs);
- :mod:`housing.log.metrics`: the log's own Prometheus counters.

No SQL over these tables exists outside this package, and only the service starts a writer
(tests/test_architecture.py holds both).
"""
