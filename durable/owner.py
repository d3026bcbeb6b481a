"""Who owns a run: this App in this process, named so that its death is visible.

An owner id is ``host|boot|pidns|pid|start|token``: the machine's name, its
boot id, the PID namespace, the pid and the process's start time, and a random
token. Every owner holds its runs under a lease (timed by the store's clock and
renewed by its worker); a run whose lease has expired is taken over by any
worker. An owner in the same PID namespace of the same boot of this machine is
also checked by its pid, so its death is seen at once, without waiting for its
lease: its pid is gone, or belongs to a process that started at another time.
Nothing else is inferred from an id: two machines may share a host name, so
an owner of another boot or namespace is judged by its lease alone.

The id is taken when an App opens, not when it is built, so an App made before
a ``fork()`` never shares its parent's identity.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store.base import Claimed

__all__ = ["Owner", "describe_owner", "is_dead_here", "resume_reason"]


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "-"


def _pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # 'pid:[4026531836]'
    except OSError:
        return "-"
    return link.partition("[")[2].rstrip("]") or "-"


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), "" if unknowable, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    # The command name (field 2) may contain spaces and parentheses: split after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie has exited; only its exit status waits to be collected
    return fields[19]  # field 22 of the whole line: starttime


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def _boot_and_namespace() -> tuple[str, str]:
    return _boot_id(), _pid_namespace()  # neither changes while a process lives, nor across fork()


def _here() -> tuple[str, str, str]:
    return (socket.gethostname().replace("|", "_"), *_boot_and_namespace())


class Owner:
    """The identity an open App writes into the runs it claims."""

    __slots__ = ("id", "pid")

    def __init__(self) -> None:
        host, boot, pidns = _here()
        pid = os.getpid()
        self.pid = pid
        self.id = f"{host}|{boot}|{pidns}|{pid}|{process_start(pid) or ''}|{secrets.token_hex(4)}"


def describe_owner(owner: str) -> str:
    """An owner id for people: 'pid 123' here, 'pid 123 on host' elsewhere."""
    parts = owner.split("|")
    if len(parts) != 6:
        return owner
    host, _, _, pid, _, _ = parts
    return f"pid {pid}" if host == _here()[0] else f"pid {pid} on {host}"


def is_dead_here(owner: str) -> bool:
    """Whether `owner` is a process of this machine's boot and PID namespace that has exited.

    False for every other owner, alive or not: only its lease can tell.
    """
    parts = owner.split("|")
    if len(parts) != 6:
        return False
    host, boot, pidns, pid_text, start, _ = parts
    if (host, boot, pidns) != _here():
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # another App of this very process: its lease tells
    if start:
        return process_start(pid) != start
    return not _exists(pid)


def resume_reason(claimed: Claimed, dead_owners: list[str]) -> str:
    """Why a run is being resumed, in words for the log."""
    if claimed.status == "sleeping":
        return "timer due"
    if claimed.status == "waiting":
        return "a prompt's timeout passed"
    if claimed.status == "running":
        if claimed.owner is None:
            return "recovered"
        why = "which died" if claimed.owner in dead_owners else "whose lease expired"
        return f"recovered from {describe_owner(claimed.owner)}, {why}"
    return {
        "answered": "prompt answered", "released": "released by a stopped worker", "submitted": "submitted",
        "retried": "retried", "forked": "forked", "resumed": "resumed after a pause",
    }.get(
        claimed.ready or "", "ready"
    )  # fmt: skip
