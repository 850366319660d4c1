"""The housing price prediction service: ``bentoml serve service.service:HousePricer``."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any, cast

import bentoml
import numpy as np
import psycopg
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from housing.columns import FEATURE_COLUMNS
from housing.explain import Explanation, concatenate
from housing.jobs import JobRunner
from housing.log.queries import LogReader
from housing.log.reloads import CHALLENGER, Watcher, asked_challenger, request_model, this_replica
from housing.log.store import DISK_FULL
from housing.log.writer import RequestRows, open_log
from housing.periodic import Periodic
from housing.registry import tracking_uri
from housing.settings import settings, variable
from service import prometheus_metrics
from service.admin import admin, history, warm_registry_client
from service.api_docs import TITLE, Refusals, package_version
from service.api_models import (
    BatchPrediction,
    ColumnPrediction,
    ExplainRequest,
    Explanations,
    Feedback,
    FeedbackReceipt,
    House,
    HouseBatch,
    HouseColumns,
    Invocation,
    InvocationParams,
    InvocationResponse,
    Prediction,
    PricedRecord,
    check_batch_size,
    columns_of,
    house_explanations,
)
from service.auth import bearer_refusal
from service.balance import ConnectionBalancer, worker_board
from service.champion_follower import ChampionFollower
from service.middleware import (
    UNBOUNDED_PATHS,
    RequestMiddleware,
    close_request_log,
    configure_request_log,
    request_state,
)
from service.model import NotExplainableError, ServedModel, load_bento_model, load_served_model
from service.model_store import use_a_writable_model_store
from service.openapi import OpenAPIDocument, docs_page, served_document
from service.served_paths import label_unserved_paths, served_path
from service.shadow_routes import shadow_admin, shadow_view
from service.shadow_scorer import ShadowScorer
from service.state import ServingState
from service.view_cache import ViewCache
from service.views import views

API_PATHS = ("/predict", "/predict_batch", "/predict_columns", "/invocations", "/feedback", "/explain")
# Requests written to the JSON request log: the API, and every admin call (refused logins too).
LOGGED_PATHS = (*API_PATHS, "/admin")
# Houses explained per step: about 0.3 s of a core, after which a request whose client went away stops.
EXPLAIN_CHUNK = 48
# JSON values a house has at most (its fields, and its place in a list), and small requests' headroom.
VALUES_PER_HOUSE = len(FEATURE_COLUMNS) + 1
SMALL_REQUEST_VALUES = 64
# GET endpoints (BentoML APIs are POST only), admin operations, and the Swagger page; FastAPI's own
# document of them stays at /openapi.json.
info_app = FastAPI(title=f"{TITLE}: views and admin", docs_url=None, redoc_url=None)
ROUTERS = (views, admin, history, shadow_view, shadow_admin, docs_page)
for router in ROUTERS:
    info_app.include_router(router)


@dataclass(frozen=True)
class Priced:
    """One request's prices (USD), their bounds (n_houses, 2) or None, its id and the model that priced it."""

    prices: list[float]
    intervals: np.ndarray | None
    request_id: str
    model: ServedModel

    @property
    def lower(self) -> list[float] | None:
        return None if self.intervals is None else self.intervals[:, 0].tolist()

    @property
    def upper(self) -> list[float] | None:
        return None if self.intervals is None else self.intervals[:, 1].tolist()

    def identity(self) -> dict[str, Any]:
        """What every prediction answer carries besides prices: request id, model and nominal coverage."""
        coverage = self.model.info.interval_coverage
        return {"request_id": self.request_id, "interval_coverage": coverage, **self.model.identity()}


class NotFound(BentoMLException):
    error_code = HTTPStatus.NOT_FOUND


class Conflict(BentoMLException):
    error_code = HTTPStatus.CONFLICT


class TooManyRequests(BentoMLException):
    error_code = HTTPStatus.TOO_MANY_REQUESTS


class ClientGone(BentoMLException):
    """The client hung up before its answer was ready: the answer goes nowhere, the request log says 408."""

    error_code = HTTPStatus.REQUEST_TIMEOUT


class Unavailable(BentoMLException):
    error_code = HTTPStatus.SERVICE_UNAVAILABLE


LOG_UNREACHABLE = "the prediction log's database is unreachable; retry in a few seconds"
LOG_FULL = "the prediction log's disk is full; retry once an operator has freed space"
LOG_REFUSING = "no price is given that the log cannot keep (HOUSING_LOG_FULL_POLICY=refuse); retry later"


@info_app.exception_handler(psycopg.OperationalError)
async def log_unreachable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
    """A view that reads the shared log while PostgreSQL restarts: 503 (retry), not an error of the service."""
    return JSONResponse({"detail": f"{request.url.path}: {LOG_UNREACHABLE}"}, status_code=503,
                        headers={"Retry-After": "2"})  # fmt: skip


def log_refusal() -> str | None:
    """Why a pricing request gets 503 now: the strict policy (``HOUSING_LOG_FULL_POLICY=refuse``) while the log
    cannot store its rows (housing.log.writer); None when it may be answered."""
    state: ServingState | None = getattr(info_app.state, "serving", None)
    if settings().log_full_policy != "refuse" or state is None or state.log.accepting:
        return None
    return f"{state.log.problem or 'the prediction log is full'}: {LOG_REFUSING}"


def feedback_refusal() -> str | None:
    """Why feedback gets 503 now: the log cannot store it (None: it can)."""
    state: ServingState | None = getattr(info_app.state, "serving", None)
    if state is None or state.log.unavailable_reason is None:
        return None
    return f"feedback: {LOG_FULL if state.log.unavailable_reason == DISK_FULL else LOG_UNREACHABLE}"


def feedback_guard(authorization: str | None) -> tuple[int, str] | None:
    """Feedback trains the next model: only clients with ``HOUSING_FEEDBACK_TOKEN`` may send it."""
    refusal = bearer_refusal(authorization, settings().feedback_token, "feedback", variable("feedback_token"))
    if refusal is not None:
        prometheus_metrics.FEEDBACK_REFUSED.labels("unauthorized").inc()
    return refusal


@bentoml.service(
    name="housing-price-service",
    workers=2,
    # The concurrency bound is service.middleware's (HOUSING_MAX_CONCURRENCY a worker), taken once the body is read:
    # BentoML's would hold a slot while a slow client sends its body.
    traffic={"timeout": 30},
    # The service writes its own JSON request log (service.middleware); BentoML's is redundant and slower.
    logging={"access": {"enabled": False}},
    # No trace exporter is configured, so OpenTelemetry spans on the prediction paths would go nowhere
    # and cost 6% of a prediction; an operator who adds an exporter sets tracing.excluded_urls too.
    tracing={"excluded_urls": list(API_PATHS)},
    metrics={
        "namespace": "housing",
        "duration": {"buckets": [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]},
    },
)
@bentoml.asgi_app(info_app)
class HousePricer:
    model_ref = bentoml.models.BentoModel(settings().model_tag)

    def __init__(self) -> None:
        config = settings()
        use_a_writable_model_store()  # the image serves its bento from a read-only root
        model = load_served_model(self.model_ref, config.compiled_dir)
        log = open_log(config)
        load = partial(load_bento_model, compiled_dir=config.compiled_dir)
        shadow = ShadowScorer(
            log, load, config.shadow_queue_houses, config.shadow_interval_s, config.shadow_batch_houses
        )
        self.state = ServingState(
            model=model,
            log=log,
            reads=LogReader(log.store),
            views=ViewCache(config.view_cache_s),
            jobs=JobRunner(log.store, config.prediction_db.parent),
            replica=this_replica(),
            started=time.time(),
            shadow=shadow,
        )
        info_app.state.serving = self.state
        # Explanations are the costliest work: this many at once per worker (see explain).
        self.explaining = asyncio.Semaphore(config.explain_concurrency)
        # Feedback whose prediction is not in the log yet waits for it; this many at once per worker.
        self.feedback_waiters = asyncio.Semaphore(config.feedback_waiters)
        prometheus_metrics.publish_model(model.info, serving=True)
        worker = bentoml.server_context.worker_index
        configure_request_log(config.log_dir, worker, config.log_max_bytes, config.log_backups, config.log_to_stdout)
        self.follower = self._model_follower(f"{self.state.replica}#{worker or 0}", worker in (None, 1))
        self.follower.start()
        warm_registry_client()
        # BentoML looks an API up on the instance for every request, and its descriptor then builds a new
        # caller, inspecting the method's signature: 5% of a prediction. The instance keeps each one built once.
        for api in cast(Any, HousePricer).apis:
            setattr(self, api, getattr(self, api))
        # Everything loaded so far lives as long as the worker: keep it out of the garbage
        # collector's full passes, which otherwise stall a request now and then for tens of ms.
        gc.freeze()

    def _model_follower(self, worker: str, first: bool) -> Periodic:
        """The worker's one background thread for its model: it follows reload requests (housing.log.reloads)
        and, on one worker per replica with ``HOUSING_FOLLOW_CHAMPION``, the registry's champion."""
        config, store, replica = settings(), self.state.log.store, self.state.replica
        # A challenger that does not load is tried again at the next poll of the registry.
        watcher = Watcher(
            store, replica, worker, self._serving, self._switch, self.state.shadow, config.champion_poll_s
        )
        chores: list[tuple[float, Callable[[], object]]] = [(config.reload_poll_s, watcher.poll)]
        if config.follow_champion and first:
            ask = partial(request_model, store, replica=replica)
            follower = ChampionFollower(tracking_uri(config.project_dir), self._serving, ask, watcher.set_note,
                                        partial(asked_challenger, store, replica),
                                        partial(request_model, store, replica=replica, role=CHALLENGER))  # fmt: skip
            chores.append((config.champion_poll_s, follower.follow))
        return Periodic("model-follower", chores)

    @bentoml.on_shutdown
    def flush_logs(self) -> None:
        self.follower.stop()
        self.state.shadow.close()  # its last prices join the log's queue before the log's final flush
        self.state.log.close()
        close_request_log()

    @bentoml.api(route="/predict")
    async def predict(self, house: House, /, ctx: bentoml.Context) -> Prediction:
        """Price one house, with its interval."""
        priced = self._price("predict", columns_of([house]), ctx)
        lower, upper = (None, None) if priced.intervals is None else priced.intervals[0].tolist()
        return Prediction(price_usd=priced.prices[0], lower_usd=lower, upper_usd=upper, **priced.identity())

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, houses: HouseBatch, /, ctx: bentoml.Context) -> BatchPrediction:
        """Price a list of houses, with their intervals; prices come back in the same order."""
        priced = self._price("predict_batch", columns_of(houses.root), ctx, field="houses")
        return BatchPrediction(prices_usd=priced.prices, lower_usd=priced.lower, upper_usd=priced.upper,
                               count=len(priced.prices), **priced.identity())  # fmt: skip

    @bentoml.api(route="/predict_columns")
    async def predict_columns(self, houses: HouseColumns, /, ctx: bentoml.Context) -> ColumnPrediction:
        """Price houses sent as columns (one list per field), with their intervals: one list per output column.

        The same houses, rules, errors and log rows as /predict_batch, in the form a data frame has: no object
        per house to parse, validate or answer.
        """
        priced = self._price("predict_columns", houses.columns(), ctx, field="columns")
        return ColumnPrediction(price_usd=priced.prices, lower_usd=priced.lower, upper_usd=priced.upper,
                                count=len(priced.prices), **priced.identity())  # fmt: skip

    @bentoml.api(route="/invocations")
    async def invocations(self, request: Invocation, /, ctx: bentoml.Context) -> InvocationResponse:
        """MLflow's scoring protocol, for clients of `mlflow models serve`; ``params.intervals`` adds bounds."""
        params = request.params or InvocationParams()
        houses = columns_of(request.houses())
        priced = self._price("invocations", houses, ctx, field="dataframe", coverage=params.coverage)
        if not params.intervals:
            return InvocationResponse(predictions=priced.prices)
        if priced.intervals is None:
            raise Conflict("params.intervals: the served model version was registered without intervals")
        records = zip(priced.prices, *priced.intervals.T.tolist(), strict=True)
        return InvocationResponse(predictions=[PricedRecord(price_usd=p, lower_usd=lo, upper_usd=up)
                                               for p, lo, up in records])  # fmt: skip

    @bentoml.api(route="/explain")
    async def explain(self, request: ExplainRequest, /, ctx: bentoml.Context) -> Explanations:
        """Why each house gets its price: every raw input's contribution, in USD (LightGBM models; else 409).

        The price is the one /predict gives; base_usd plus the contributions equals it within 1 USD. They are the
        forest's exact TreeSHAP values, engineered features folded onto the inputs they come from. With a log (or
        square root) target the values are computed in that space and scaled into USD in proportion, so they still
        add up to the price. Explanations are not predictions: they are not written to the prediction log.
        """
        houses = request.houses()
        check_batch_size(len(houses), "houses", settings().max_explain_houses)
        model = self.state.model  # one model for the whole request, as for a prediction
        if self.explaining.locked():
            raise TooManyRequests(f"explain: {settings().explain_concurrency} explanations at once per worker; retry")
        try:
            async with self.explaining:
                explanation = await self._explain(model, columns_of(houses), ctx)
        except NotExplainableError as exc:
            raise Conflict(str(exc)) from None
        state = request_state(ctx.request.state)
        state.update(model_version=model.info.model_version, records=len(houses))
        explained = house_explanations(explanation)
        return Explanations(explanations=explained, count=len(explained), request_id=state["request_id"],
                            **model.identity())  # fmt: skip

    @bentoml.api(route="/feedback")
    async def feedback(self, feedback: Feedback, /) -> FeedbackReceipt:
        """Record the actual sale price of a priced house (ground truth for accuracy, and a training label).

        Needs ``Authorization: Bearer <HOUSING_FEEDBACK_TOKEN>`` (checked by the middleware, before the body
        is read). The first answer for a house is kept: a second one gets 409, and a correction is an admin's
        call (``PUT /admin/feedback``).
        """
        try:
            prediction = await self._find_prediction(feedback.request_id, feedback.index)
            if prediction is None:
                prometheus_metrics.FEEDBACK_REFUSED.labels("unknown").inc()
                raise NotFound(f"request_id: no prediction {feedback.request_id!r} (index {feedback.index}) in the log")
            args = (feedback.request_id, feedback.index, feedback.actual_price_usd)
            recorded = await asyncio.to_thread(self.state.log.record_feedback, *args, authenticated=True)
        except self.state.log.store.error as exc:
            if not (why := self.state.log.store.unavailable(exc)):
                raise
            raise Unavailable(f"feedback: {LOG_FULL if why == DISK_FULL else LOG_UNREACHABLE}") from None
        if not recorded:
            prometheus_metrics.FEEDBACK_REFUSED.labels("duplicate").inc()
            raise Conflict(f"request_id: feedback for {feedback.request_id!r} (index {feedback.index}) is recorded "
                           "already; an admin corrects it with PUT /admin/feedback")  # fmt: skip
        predicted = float(prediction["price_usd"])
        return FeedbackReceipt(
            request_id=feedback.request_id,
            index=feedback.index,
            predicted_price_usd=predicted,
            actual_price_usd=feedback.actual_price_usd,
            error_usd=feedback.actual_price_usd - predicted,
        )

    async def _explain(self, model: ServedModel, columns: dict[str, list[Any]], ctx: bentoml.Context) -> Explanation:
        """``model.explain`` of the houses, a chunk at a time on a thread (a house takes LightGBM 6-8 ms, which
        releases the GIL: the worker keeps serving meanwhile), stopping between chunks once the client has gone
        or the server's timeout has cancelled the request: nobody would receive the rest."""
        houses, parts = len(columns[FEATURE_COLUMNS[0]]), []
        try:
            for start in range(0, houses, EXPLAIN_CHUNK):
                if start and await ctx.request.is_disconnected():
                    prometheus_metrics.ABANDONED_REQUESTS.labels("/explain", "client_gone").inc()
                    raise ClientGone("explain: the client went away; the rest of its houses were not explained")
                chunk = {name: values[start : start + EXPLAIN_CHUNK] for name, values in columns.items()}
                parts.append(await asyncio.to_thread(model.explain, chunk))
        except asyncio.CancelledError:  # the server's timeout: the chunk in flight ends, no other starts
            prometheus_metrics.ABANDONED_REQUESTS.labels("/explain", "timeout").inc()
            raise
        return concatenate(parts)

    def __is_ready__(self) -> bool:
        return getattr(self, "state", None) is not None

    def _serving(self) -> str:
        return self.state.model.info.bento_tag

    def _switch(self, bento_tag: str) -> None:
        """Load ``bento_tag`` beside the served model, then swap: requests in flight finish on the old one."""
        model = load_bento_model(bento_tag, settings().compiled_dir)
        old, self.state.model = self.state.model, model
        prometheus_metrics.publish_model(old.info, serving=False)
        prometheus_metrics.publish_model(model.info, serving=True)
        gc.freeze()  # the new model lives as long as the old one did (see __init__)

    def _price(
        self, endpoint: str, columns: dict[str, list[Any]], ctx: bentoml.Context, field: str = "house",
        coverage: float | None = None,
    ) -> Priced:  # fmt: skip
        """Prices and bounds of houses given as columns (``columns_of``), the request id and the model that priced
        them; queues one log row per house.

        The log keeps the bounds at the model's nominal coverage, whatever ``coverage`` the answer has.
        """
        houses = range(len(columns[FEATURE_COLUMNS[0]]))
        check_batch_size(len(houses), field)
        state = request_state(ctx.request.state)
        model = self.state.model  # one model for the whole request, even if a reload swaps it meanwhile
        prices, spread = model.price_and_spread(columns)
        nominal = model.bounds(prices, spread)
        logged = nominal if nominal is not None else np.full((len(houses), 2), None)
        version = model.info.model_version
        shared = {"request_id": state["request_id"], "endpoint": endpoint, "ts": time.time(), "model_version": version,
                  "latency_ms": (time.perf_counter() - state["start"]) * 1000}  # fmt: skip
        priced = prices.tolist()
        lower, upper = logged.T.tolist()
        logged_columns = {"idx": houses, "price_usd": priced, "lower_usd": lower, "upper_usd": upper}
        rows = RequestRows({**logged_columns, **columns}, shared)
        self.state.log.add(rows)
        self.state.shadow.offer(rows)  # priced again by the challenger, if any, once this answer is on its way
        intervals = nominal if coverage is None else model.bounds(prices, spread, coverage)
        state.update(model_version=version, records=len(houses))
        prometheus_metrics.PRICED_HOUSES.labels(endpoint, version).inc(len(houses))
        prometheus_metrics.BATCH_SIZE.labels(endpoint).observe(len(houses))
        prometheus_metrics.observe_many(prometheus_metrics.PREDICTED_PRICE, priced)
        return Priced(priced, intervals, state["request_id"], model)

    async def _find_prediction(self, request_id: str, index: int) -> dict[str, Any] | None:
        """The logged prediction, waiting briefly with growing pauses: it may still be on a writer's queue.

        Few requests may wait at once (``feedback_waiters``); past them the answer is 429, so a burst of
        feedback for unknown ids cannot tie up the worker's threads.
        """
        reads = self.state.reads
        if (row := await asyncio.to_thread(reads.prediction, request_id, index)) is not None:
            return row
        if self.feedback_waiters.locked():
            prometheus_metrics.FEEDBACK_REFUSED.labels("busy").inc()
            raise TooManyRequests("request_id: too many feedback requests are waiting for their prediction; retry")
        async with self.feedback_waiters:
            deadline, pause = time.monotonic() + settings().feedback_grace_s, 0.02
            while (row := await asyncio.to_thread(reads.prediction, request_id, index)) is None:
                if time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
        return row


# The routes that price houses (the strict log policy refuses them alike) and those that take batches.
PRICING_PATHS = ("/predict", "/predict_batch", "/predict_columns", "/invocations")
BATCH_PATHS = ("/predict_batch", "/predict_columns", "/invocations")

# The decorator turned the class into a bentoml Service, which mypy cannot see.
cast(Any, HousePricer).add_asgi_middleware(
    RequestMiddleware,
    max_body_bytes=lambda: settings().body_limit,
    logged_paths=LOGGED_PATHS,
    guards={"/feedback": feedback_guard},
    json_paths=API_PATHS,
    body_timeout_s=lambda: settings().body_timeout_s,
    unavailable=dict.fromkeys(PRICING_PATHS, log_refusal) | {"/feedback": feedback_refusal},
    limits=dict.fromkeys(BATCH_PATHS, lambda: f"at most {settings().max_batch_size} houses")
    | {"/explain": lambda: f"at most {settings().max_explain_houses} houses"},
    max_concurrency=lambda: settings().max_concurrency,
    max_values={
        "/predict": lambda: SMALL_REQUEST_VALUES,
        "/feedback": lambda: SMALL_REQUEST_VALUES,
        "/predict_batch": lambda: settings().max_batch_size * VALUES_PER_HOUSE + SMALL_REQUEST_VALUES,
        "/predict_columns": lambda: settings().max_batch_size * VALUES_PER_HOUSE + SMALL_REQUEST_VALUES,
        "/invocations": lambda: settings().max_batch_size * VALUES_PER_HOUSE + SMALL_REQUEST_VALUES,
        "/explain": lambda: settings().max_explain_houses * VALUES_PER_HOUSE + SMALL_REQUEST_VALUES,
    },
)
# /docs.json as valid OpenAPI 3.0 (BentoML's own mixes in 3.1) describing this API: see service.openapi, api_docs.
REFUSALS = Refusals(
    api_paths=API_PATHS,
    json_paths=API_PATHS,
    tokens={"/feedback": "feedback", "/admin": "admin"},
    unavailable=dict.fromkeys(PRICING_PATHS, "With the strict policy (HOUSING_LOG_FULL_POLICY=refuse), while "
                              "the log cannot keep its rows: retry later.")
    | {"/feedback": "The log cannot store feedback now (its database unreachable, or its disk full): retry later."},
    limits=dict.fromkeys(BATCH_PATHS, "HOUSING_MAX_BATCH_SIZE") | {"/explain": "HOUSING_MAX_EXPLAIN_HOUSES"},
    unbounded=UNBOUNDED_PATHS,
)  # fmt: skip


def api_version() -> str:
    """The document's version: the package (the bento's tag, or the project's version) and the served model."""
    service = cast(Any, HousePricer)
    state: ServingState | None = getattr(info_app.state, "serving", None)
    info = None if state is None else state.model.info
    model = "no model loaded" if info is None else f"model {info.model_name} v{info.model_version}"
    return f"{package_version(str(service.bento.tag) if service.bento else None)}, {model}"


cast(Any, HousePricer).add_asgi_middleware(
    OpenAPIDocument,
    build=lambda: served_document(
        cast(Any, HousePricer).openapi_spec.asdict(), settings().max_batch_size, REFUSALS, api_version()
    ),
    key=api_version,
)
# Keep-alive connections spread across the workers, however they arrive: see service.balance.
cast(Any, HousePricer).add_asgi_middleware(ConnectionBalancer, board=worker_board)
# Request metrics labelled by the paths the service serves, never by a path a client made up: see service.served_paths.
label_unserved_paths(
    served_path(
        [api.route for api in cast(Any, HousePricer).apis.values()],
        [*(route.path for route in info_app.routes if isinstance(route, Route)),
         *(route.path for router in ROUTERS for route in router.routes if isinstance(route, Route))],
    )
)  # fmt: skip
