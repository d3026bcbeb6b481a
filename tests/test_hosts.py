"""Several hosts for real: workers in network namespaces share one PostgreSQL journal.

Each host is a network namespace joined to this one by a veth link, with its
own address, and its worker runs in PID and UTS namespaces of its own, so to
durable it is another machine: its runs are judged by their lease alone. The
hosts reach PostgreSQL through a relay (tests/netproxy.py) on their link's
address, so taking a link down cuts that host off from the journal.

Mid-way, one host's worker is SIGKILLed and another host is cut off until its
lease has expired, then brought back. Every run must still complete, and no
step may run twice except one that was in flight on a host that was killed
or cut off.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import IO
from pathlib import Path

import pytest

import durable
from helpers import HERE, eventually, make_app, wait_until

HOSTS = 4
RUNS = 2000
STEPS = 4
STEP_SECONDS = 0.1
CONCURRENCY = 20
LEASE = 3.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"dprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot make a network namespace here ({exc})"
    for tool in ("unshare", "hostname"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            return f"{tool} is not installed"
    return None


class Hosts:
    """HOSTS namespaces h1..hN: host i is 10.77.<i>.2, reaching the relay at 10.77.<i>.1."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.made: list[int] = []

    def ns(self, i: int) -> str:
        return f"d{self.tag}n{i}"

    def link(self, i: int) -> str:
        return f"d{self.tag}v{i}"  # the root side of host i's veth

    def make(self) -> None:
        for i in range(1, HOSTS + 1):
            ns, link, peer = self.ns(i), self.link(i), f"d{self.tag}p{i}"
            _ip("netns", "add", ns)
            self.made.append(i)
            _ip("link", "add", link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            _ip("addr", "add", f"10.77.{i}.1/24", "dev", link)
            _ip("link", "set", link, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"10.77.{i}.2/24", "dev", peer)
            _ip("netns", "exec", ns, "ip", "link", "set", peer, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def remove(self) -> None:
        for i in self.made:
            subprocess.run(["ip", "link", "del", self.link(i)], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.ns(i)], capture_output=True)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _can_make_namespaces()
    if reason is not None:
        pytest.skip(reason)
    made = Hosts(uuid.uuid4().hex[:4])
    try:
        made.make()
        yield made
    finally:
        made.remove()


def start_host_worker(hosts: Hosts, i: int, url: str, log: Path, err: IO[str]) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        DURABLE_DB=url.replace("127.0.0.1", f"10.77.{i}.1"),
        FLEET_LOG=str(log),
        FLEET_LEASE=str(LEASE),
    )
    command = (
        f"hostname host{i} && exec {sys.executable} -m durable worker fleet:app --concurrency {CONCURRENCY}"
    )
    return subprocess.Popen(
        ["ip", "netns", "exec", hosts.ns(i), "unshare", "--uts", "--pid", "--fork", "--mount-proc", "sh", "-c", command],
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,  # a file: a pipe nobody reads until the end would fill and block the worker
        text=True,
    )


def worker_pid(proc: subprocess.Popen[str]) -> int:
    """The worker's pid here: the child of `unshare`, pid 1 of its own PID namespace."""

    def child() -> int | None:
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                pids = f.read().split()
        except OSError:
            return None
        return int(pids[0]) if pids else None

    return wait_until(child, what="the worker process to start")


def done_lines(logs: dict[int, Path]) -> list[tuple[str, int]]:
    """(run:step, host) of every step that finished, on every host."""
    found = []
    for host, log in logs.items():
        if log.exists():
            for line in log.read_text().splitlines():
                word, key, _ = line.split()
                if word == "done":
                    found.append((key, host))
    return found


async def completed(app: durable.App) -> int:
    return len(await app.list_runs(status="completed", limit=RUNS + 1))


async def test_hosts_share_a_journal_through_a_kill_and_a_cut(hosts: Hosts, store: str, tmp_path: Path) -> None:
    if not store.startswith("postgresql://"):
        pytest.skip("several machines share a journal on PostgreSQL only (an SQLite file is one machine's)")
    if "127.0.0.1" not in store:
        pytest.skip("the relay forwards to a server on 127.0.0.1")
    port = store.split("127.0.0.1:", 1)[1].split("/", 1)[0]
    relay = subprocess.Popen(
        [sys.executable, str(HERE / "netproxy.py"), f"127.0.0.1:{port}", *(f"10.77.{i}.1:{port}" for i in range(1, HOSTS + 1))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
    logs = {i: tmp_path / f"host{i}.log" for i in range(1, HOSTS + 1)}
    workers: dict[int, subprocess.Popen[str]] = {}
    err_files = {i: open(log.with_suffix(".err"), "w") for i, log in logs.items()}
    killed, cut = 2, 3
    try:
        async with make_app(store) as control:
            for n in range(RUNS):
                await control.submit("chain", steps=STEPS, step_seconds=STEP_SECONDS, run_id=f"r{n:04}")
            workers = {i: start_host_worker(hosts, i, store, logs[i], err_files[i]) for i in range(1, HOSTS + 1)}
            await eventually(lambda: _at_least(control, RUNS // 5), timeout=120, what="a fifth of the runs to complete")

            os.kill(worker_pid(workers[killed]), signal.SIGKILL)
            _ip("link", "set", hosts.link(cut), "down")
            cut_at = time.monotonic()
            cut_off = {k for k, _ in done_lines({cut: logs[cut]})}
            # Cut off until its lease has long expired and the others took its runs.
            await eventually(lambda: _at_least(control, RUNS // 2), timeout=120, what="half of the runs to complete")
            while time.monotonic() - cut_at < 3 * LEASE:
                await eventually(lambda: _at_least(control, 0), timeout=1)
            _ip("link", "set", hosts.link(cut), "up")

            try:
                await eventually(lambda: _at_least(control, RUNS), timeout=180, what="every run to complete")
            finally:
                runs = await control.list_runs(limit=RUNS + 1)
            results = collections.Counter((r.status, r.result) for r in runs)
    finally:
        errs = {}
        for i, proc in workers.items():
            if proc.poll() is None:
                os.kill(worker_pid(proc), signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            err_files[i].close()
            errs[i] = logs[i].with_suffix(".err").read_text()
        relay.kill()
        relay.communicate()

    stuck = [(r.run_id, r.status) for r in runs if r.status != "completed"]
    assert results == {("completed", sum(range(STEPS))): RUNS}, f"not completed: {stuck[:10]}"
    done = done_lines(logs)
    per_step = collections.Counter(key for key, _ in done)
    assert set(per_step) == {f"r{n:04}:{s}" for n in range(RUNS) for s in range(STEPS)}
    twice = {key for key, n in per_step.items() if n > 1}
    assert all(per_step[key] == 2 for key in twice), "a step ran three times or more"
    # A step ran twice only if it was in flight on the killed or the cut-off host.
    hosts_of = collections.defaultdict(set)
    for key, host in done:
        hosts_of[key].add(host)
    assert all(hosts_of[key] & {killed, cut} for key in twice), [k for k in twice if not hosts_of[k] & {killed, cut}]
    assert len(twice) <= 2 * CONCURRENCY
    # The cut-off host learnt it had lost its runs: none of its late writes was taken.
    assert "stopped" in errs[cut] and ("taken over" in errs[cut] or "store failed" in errs[cut]), errs[cut][-3000:]
    # The others took over the killed host's runs by lease (another PID namespace: no pid to look at).
    assert any("whose lease expired" in errs[i] for i in range(1, HOSTS + 1) if i not in (killed, cut))
    assert cut_off <= set(per_step)


async def _at_least(app: durable.App, n: int) -> bool:
    return await completed(app) >= n
