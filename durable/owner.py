"""Who owns a run: this App in this process, named so that its death is visible.

An owner id is ``host|boot|pid|start|token``. On the same machine a dead owner
is recognised at once: its pid is gone, or now belongs to a process that started
at another time, or the machine has rebooted since. An owner on another machine
is presumed alive while its lease (renewed by heartbeats) has not expired.
"""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["Owner", "describe_owner", "is_alive"]


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "-"


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


HOST = socket.gethostname().replace("|", "_")
BOOT = _boot_id()


class Owner:
    """The identity this App writes into the runs it claims."""

    def __init__(self) -> None:
        pid = os.getpid()
        start = process_start(pid) or ""
        self.pid = pid
        self.id = f"{HOST}|{BOOT}|{pid}|{start}|{secrets.token_hex(4)}"


def describe_owner(owner: str) -> str:
    """An owner id for people: 'pid 123' here, 'pid 123 on host' elsewhere."""
    parts = owner.rsplit("|", 4)
    if len(parts) != 5:
        return owner
    return f"pid {parts[2]}" if parts[0] == HOST else f"pid {parts[2]} on {parts[0]}"


def is_alive(owner: str, lease_until: float | None, now: float) -> bool:
    """Whether the App named by `owner` may still be executing its runs."""
    parts = owner.rsplit("|", 4)
    leased = lease_until is not None and lease_until > now
    if len(parts) != 5 or parts[0] != HOST:
        return leased
    _, boot, pid_text, start, _ = parts
    if boot != BOOT:
        return False  # the machine rebooted since: every process of that boot is gone
    pid = int(pid_text)
    if pid == os.getpid():
        return leased  # another App of this very process: alive while it heartbeats
    if start:
        return process_start(pid) == start
    return _exists(pid) and leased
