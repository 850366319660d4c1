"""Dev-only tools: what the tests, the benchmarks, the load test and the demo scripts share to run the project.

Never part of the product: no module of housing/, training/, service/ or operations/ imports it, and it is left
out of the wheel, the bento and every image (tests/devtools/test_packaging.py holds all four). It holds:

- ``paths``: the checkout's root and the venv's programs;
- ``ports``: free loopback ports, singly or with a free twin (SeaweedFS's gRPC ports);
- ``processes``: servers started in sessions of their own with their output logged, and stopped;
- ``waits``: polling until a condition holds, a started server is ready, or the time is up;
- ``serving``: a throwaway ``bentoml serve`` of the service on loopback, and its feedback token;
- ``houses``: houses as request bodies, from the pipeline's test split;
- ``local_stores``: PostgreSQL, SeaweedFS's S3 and MLflow's server on one machine (``make shared-stores``);
- ``browser``: headless Chromium through Playwright;
- ``system_tools``: the system tools a make target needs, checked before it starts (standard library only).
"""
