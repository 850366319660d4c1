"""The local stores' ports and start-up errors (devtools), without starting the stores (tests/stores starts them)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from devtools import ports
from devtools.local_stores import SeaweedS3
from devtools.ports import GRPC_OFFSET, PAIRED_PORTS, free_port_pairs
from devtools.processes import start_logged
from devtools.waits import wait_for_process

# Linux hands out outgoing connections' ports from here up (/proc/sys/net/ipv4/ip_local_port_range).
EPHEMERAL_START = 32_768


def test_seaweed_ports_and_their_grpc_twins_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = free_port_pairs(4)
    every = ports + [port + GRPC_OFFSET for port in ports]
    assert len(set(every)) == 8
    assert max(every) < EPHEMERAL_START
    for port in every:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nobody holds it


def test_a_port_whose_grpc_twin_is_taken_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    held, other = free_port_pairs(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", held + GRPC_OFFSET))
        holder.listen()
        picks = iter([held, held, other])
        monkeypatch.setattr(ports.random, "choice", lambda _: next(picks))
        assert free_port_pairs(1) == [other]


def test_a_server_that_dies_at_start_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    script = "import sys; print('listen tcp 127.0.0.1:18333: bind: address already in use'); sys.exit(255)"
    process = start_logged([sys.executable, "-c", script], log)
    with pytest.raises(RuntimeError, match=r"(?s)exited with 255.*address already in use"):
        wait_for_process(lambda: False, "the server", process, 30, log)


def test_a_server_that_never_answers_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    script = "import time; print('waiting for the master', flush=True); time.sleep(60)"
    process = start_logged([sys.executable, "-c", script], log)
    try:
        with pytest.raises(TimeoutError, match=r"(?s)not ready after 3 s.*waiting for the master"):
            wait_for_process(lambda: False, "the server", process, 3, log)
    finally:
        process.kill()
        process.wait()


def test_seaweedfs_sockets_in_tmp_are_removed_and_no_others(tmp_path: Path) -> None:
    """The names SeaweedFS 4 gives its sockets (seen in /tmp after `weed server`), and one of another server's."""
    s3 = SeaweedS3(tmp_path, dict(zip(("s3", "master", "volume", "filer"), free_port_pairs(4), strict=True)))
    ports = s3.ports
    names = [f"seaweedfs-s3-{ports['s3']}.sock", f"seaweedfs-s3-grpc-{ports['s3'] + GRPC_OFFSET}.sock",
             f"seaweedfs-filer-{ports['filer']}.sock", f"seaweedfs-filer-grpc-{ports['filer'] + GRPC_OFFSET}.sock",
             f"seaweedfs-master-grpc-{ports['master'] + GRPC_OFFSET}.sock",
             f"seaweedfs-volume-grpc-{ports['volume'] + GRPC_OFFSET}.sock"]  # fmt: skip
    other = Path("/tmp", f"seaweedfs-master-grpc-{PAIRED_PORTS.start - 1}.sock")  # never one of ours
    for path in [*(Path("/tmp", name) for name in names), other]:
        path.touch()
    try:
        s3.remove_sockets()
        assert [name for name in names if Path("/tmp", name).exists()] == []
        assert other.exists()
    finally:
        other.unlink()
