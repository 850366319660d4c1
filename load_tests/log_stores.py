"""Prediction-log figures per store: write throughput at 32 clients, what the request path pays, disk use.

    python -m load_tests.log_stores [--clients 32] [--rows-per-client 5000] [--disk-rows 1000000]

For SQLite (a WAL file, as `make run` has it) and PostgreSQL (a throwaway local
cluster with fsync on, devtools.local_stores), through the service's own
writer (housing.log.writer): ``clients`` threads each queue
``rows-per-client`` one-house predictions as fast as they can, and the writer
drains them in batches of HOUSING_WRITER_BATCH_SIZE (500). Reported:

- rows/s: rows committed per second, from the first row queued to the last committed;
- add_us: what a request pays to log its row (``PredictionLog.add``), p50 and p99 in µs;
- cpu_ms_per_1000_rows: the process's CPU time per thousand rows (the writer's share of the cores);
- bytes_per_row and mib_per_million: disk use after ``disk-rows`` predictions (tables and indexes;
  SQLite's file after a WAL checkpoint, PostgreSQL's relations after VACUUM).

Writes reports/log_stores.json. `make bench` runs it after load_tests/benchmark.py:
``python -m load_tests.log_stores`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.local_stores import PostgresServer
from devtools.paths import ROOT
from housing.log.store import LogStore, PostgresStore, SQLiteStore
from housing.log.writer import PredictionLog
from service.api_models import EXAMPLE_HOUSE

REPORT = ROOT / "reports" / "log_stores.json"
FILL_CHUNK = 50_000


def house_row(rng: random.Random) -> dict[str, Any]:
    """One logged prediction as the service writes it: a fresh request id, a varied house, its price."""
    house = {key: value * rng.uniform(0.8, 1.2) if isinstance(value, float) else value
             for key, value in EXAMPLE_HOUSE.items()}  # fmt: skip
    return {"request_id": uuid.uuid4().hex, "idx": 0, "endpoint": "predict", "ts": time.time(),
            "model_version": "3", "latency_ms": rng.uniform(1, 5), "price_usd": rng.uniform(5e4, 5e5), **house}  # fmt: skip


@contextmanager
def stores(folder: Path) -> Iterator[dict[str, Any]]:
    """A factory of empty stores per engine: SQLite files in ``folder``, schemas of one PostgreSQL cluster."""
    server = PostgresServer()  # in a folder of its own: the postgres user cannot enter ``folder``
    server.start()
    try:
        yield {
            "sqlite": lambda name: SQLiteStore(folder / f"{name}.db"),
            "postgres": lambda name: PostgresStore(server.new_schema(), pool_size=2),
        }
    finally:
        server.remove()


def throughput(store: LogStore, folder: Path, clients: int, rows_per_client: int) -> dict[str, float]:
    """Rows per second through the writer with ``clients`` threads queueing at once, and the cost of queueing."""
    log = PredictionLog(store, dead_letter_path=folder / "dead.jsonl")
    costs: list[float] = []
    rng = random.Random(0)
    rows = [[house_row(rng) for _ in range(rows_per_client)] for _ in range(clients)]

    def client(mine: list[dict[str, Any]]) -> None:
        spent = []
        for row in mine:
            started = time.perf_counter()
            log.add([row])
            spent.append(time.perf_counter() - started)
        costs.extend(spent)

    threads = [threading.Thread(target=client, args=(mine,)) for mine in rows]
    cpu, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not log.flush(timeout_s=600):
        raise RuntimeError("the writer did not finish")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    log.close()
    total = clients * rows_per_client
    costs.sort()
    return {"rows": total, "rows_per_s": round(total / elapsed), "add_us_p50": round(statistics.median(costs) * 1e6, 2),
            "add_us_p99": round(costs[int(0.99 * len(costs))] * 1e6, 2),
            "cpu_ms_per_1000_rows": round(cpu * 1000 / (total / 1000), 2)}  # fmt: skip


def disk_use(store: LogStore, folder: Path, rows: int) -> dict[str, float]:
    """Bytes on disk of ``rows`` logged predictions (with their per-minute traffic totals)."""
    log = PredictionLog(store, batch_size=5000, interval_s=0.01, dead_letter_path=folder / "dead.jsonl")
    rng = random.Random(1)
    for start in range(0, rows, FILL_CHUNK):
        for _ in range(min(FILL_CHUNK, rows - start)):
            log.add([house_row(rng)])
        if not log.flush(timeout_s=600):
            raise RuntimeError("the writer did not finish")
    log.close()
    if isinstance(store, SQLiteStore):
        with store.reading() as session:
            session.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(path.stat().st_size for path in store.path.parent.glob(f"{store.path.name}*"))
    else:
        with store.reading() as session:
            session.execute("VACUUM ANALYZE")
            size = session.execute(
                "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            ).fetchone()[0]
    return {"rows": rows, "bytes": int(size), "bytes_per_row": round(int(size) / rows, 1),
            "mib_per_million": round(int(size) / rows * 1e6 / 2**20, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rows-per-client", type=int, default=5000)
    parser.add_argument("--disk-rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    report: dict[str, Any] = {"clients": args.clients}
    with tempfile.TemporaryDirectory(prefix="log-stores-") as tmp, stores(Path(tmp)) as make:
        for engine, new_store in make.items():
            store = new_store("throughput")
            report[engine] = {"throughput": throughput(store, Path(tmp), args.clients, args.rows_per_client)}
            store.close()
            store = new_store("disk")
            report[engine]["disk"] = disk_use(store, Path(tmp), args.disk_rows)
            store.close()
            print(engine, json.dumps(report[engine]), flush=True)
    ratio = report["postgres"]["throughput"]["rows_per_s"] / report["sqlite"]["throughput"]["rows_per_s"]
    report["postgres_vs_sqlite_rows_per_s"] = round(ratio, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
