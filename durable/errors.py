"""Every error durable raises, each named for its condition.

    DurableError
    ├── DefinitionError         a workflow or step is declared wrongly (raised at decoration)
    ├── InvalidArguments        a run's arguments do not fit the workflow's signature
    ├── EncodingError           a value cannot be stored as JSON, or read back as its type
    ├── WorkflowNotFound        no workflow of that name is registered on this App
    ├── RunNotFound             no run with that run_id in the journal
    ├── ScheduleNotFound        no schedule of that name in the store (pause_schedule; in durable.schedules)
    ├── RunIdInUse              the run_id belongs to a run of another workflow
    ├── ChildOfAnother          ctx.child(run_id=...) named a run that is already another run's child
    ├── RunCancelled            the run was cancelled
    ├── RunTimedOut             the run passed its deadline and was stopped (also a TimeoutError)
    ├── RunAlreadyFinished      the run ended, so it cannot be cancelled
    ├── WrongRunStatus          the run's status does not allow it (retry a completed run, resume a running one)
    ├── RunExists               a new run was asked for under a run_id that is taken (fork)
    ├── SeqOutOfRange           a seq given for a run is past the end of its journal (fork's at_seq)
    ├── NondeterminismError     replay met a different call than the one recorded
    │   ├── SignatureChanged    a run's recorded arguments no longer fit its workflow
    │   ├── UnreadableRecord    a recorded value no longer reads back as its type
    │   └── UnsafeRace          ctx calls raced with asyncio.wait or as_completed (use ctx.wait)
    ├── StepFailed              a step's recorded error whose type cannot be rebuilt
    ├── StepTimeout             a step attempt ran longer than its timeout
    ├── NotInWorkflow           a Context was used outside its running workflow
    ├── DuplicatePromptKey      two prompts of one run share a key
    ├── PromptNotFound          no pending prompt with that key
    ├── PromptAlreadyAnswered   the prompt has its answer already
    ├── PromptExpired           the prompt's timeout passed unanswered (in the workflow, and to a late answerer)
    ├── InvalidMessage          a received message does not fit ctx.receive's type (in the workflow)
    ├── ReceiveTimedOut         ctx.receive's timeout passed with no message (also a TimeoutError)
    ├── InvalidAnswer           the answer does not match the prompt's schema
    ├── AppNotOpen              the App is used outside ``async with app:``
    ├── JournalError            the journal cannot be used: corrupt, foreign, too new, or unreachable by its URL
    ├── StoreUnavailable        the store cannot be read or written for now (disk full, lock, connection lost)
    └── UnsafeBind              the HTTP server would listen beyond this machine without a token

Each error keeps its facts as attributes and builds its own message, so callers never parse strings. The
positional arguments of each constructor are its facts, in order: a stored error is rebuilt with ``cls(*args)``.
"""

from __future__ import annotations

import datetime as dt

__all__ = [
    "AppNotOpen", "ChildOfAnother", "DefinitionError", "DuplicatePromptKey", "DurableError", "EncodingError",
    "InvalidAnswer", "InvalidArguments", "InvalidMessage", "JournalError", "NondeterminismError", "NotInWorkflow",
    "PromptAlreadyAnswered", "PromptExpired", "PromptNotFound", "ReceiveTimedOut", "RunAlreadyFinished",
    "RunCancelled", "RunExists", "RunIdInUse", "RunNotFound", "RunTimedOut", "SeqOutOfRange", "SignatureChanged",
    "StepFailed", "StepTimeout", "StoreUnavailable", "UnreadableRecord", "UnsafeBind", "WorkflowNotFound",
    "UnsafeRace", "WrongRunStatus",
]  # fmt: skip


class DurableError(Exception):
    """Base class of every error durable raises."""

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        return " ".join(str(a) for a in self.args)


class DefinitionError(DurableError):
    """A workflow or step is declared wrongly; raised when it is declared."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def describe(self) -> str:
        return self.message


class InvalidArguments(DurableError):
    """The arguments given for a run do not fit the workflow; nothing was written."""

    def __init__(self, workflow: str, reason: str) -> None:
        super().__init__(workflow, reason)
        self.workflow, self.reason = workflow, reason

    def describe(self) -> str:
        return (
            f"Arguments for workflow {self.workflow!r} were rejected: {self.reason}. "
            "No run was created; call it again with arguments that match its signature."
        )


class EncodingError(DurableError):
    """A value cannot be encoded to JSON, or decoded back as its declared type."""

    def __init__(self, what: str, type_name: str, reason: str) -> None:
        super().__init__(what, type_name, reason)
        self.what, self.type_name, self.reason = what, type_name, reason

    def describe(self) -> str:
        return (
            f"{self.what} could not be stored as {self.type_name}: {self.reason}. "
            "Use JSON types, datetime/date/UUID/Decimal/bytes/Enum, dataclasses, "
            "msgspec.Struct or pydantic models, and make the annotation match the value."
        )


class WorkflowNotFound(DurableError):
    """No workflow of that name is registered on this App."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        super().__init__(name, known or [])
        self.name, self.known = name, known or []

    def describe(self) -> str:
        known = ", ".join(sorted(self.known)) or "none"
        return (
            f"No workflow named {self.name!r} is registered on this App (registered: {known}). "
            "Decorate it with @app.workflow on the App you run it with."
        )


class RunNotFound(DurableError):
    """No run with that run_id exists in the journal."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def describe(self) -> str:
        return f"No run {self.run_id!r} in this journal. Check the run_id and the database path."


class RunIdInUse(DurableError):
    """The run_id already names a run of another workflow."""

    def __init__(self, run_id: str, workflow: str, requested: str) -> None:
        super().__init__(run_id, workflow, requested)
        self.run_id, self.workflow, self.requested = run_id, workflow, requested

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} belongs to workflow {self.workflow!r}, not {self.requested!r}. "
            "Pick another run_id for this workflow."
        )


class ChildOfAnother(DurableError):
    """ctx.child(run_id=...) named a run that is already another run's child."""

    def __init__(self, run_id: str, parent: str) -> None:
        super().__init__(run_id, parent)
        self.run_id, self.parent = run_id, parent

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} is already a child of run {self.parent!r}, which hears of its end; a run has one "
            "parent. Give this child another run_id (or none, for one derived from this run's)."
        )


class RunCancelled(DurableError):
    """The run was cancelled before it finished."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} was cancelled. It will not run again; "
            "start a new run with another run_id to do the work."
        )


class RunTimedOut(DurableError, TimeoutError):
    """The run passed its deadline (@app.workflow(timeout=...) or start(..., timeout=...)) and was stopped."""

    def __init__(self, run_id: str, deadline: float) -> None:
        super().__init__(run_id, deadline)
        self.run_id, self.deadline = run_id, deadline

    def describe(self) -> str:
        at = dt.datetime.fromtimestamp(self.deadline, dt.timezone.utc).isoformat(timespec="seconds")
        return (
            f"Run {self.run_id!r} passed its deadline ({at}) and was stopped where it was; it ended failed. "
            "Give the workflow a longer timeout, or retry the run (`durable retry`), which lifts the deadline."
        )


class RunAlreadyFinished(DurableError):
    """The run has ended, so there is nothing to cancel (or pause, or send a message to)."""

    def __init__(self, run_id: str, status: str, action: str = "cancel") -> None:
        super().__init__(run_id, status, action)
        self.run_id, self.status, self.action = run_id, status, action

    def describe(self) -> str:
        so = ENDED_SO.get(self.action, f"; there is nothing to {self.action}.")
        return f"Run {self.run_id!r} already ended with status {self.status!r}{so}"


ENDED_SO = {  # what an ended run no longer does, by what was asked of it (RunAlreadyFinished.action)
    "answer": ": its prompts take no more answers, and nothing was recorded.",
    "send": ": it receives no more messages, and nothing was stored. Send it to a run that is still going.",
    "reassign": ": its prompts are closed, and nothing was changed.",
}


class WrongRunStatus(DurableError):
    """The run's status does not allow the operation asked for (retry, pause, resume)."""

    def __init__(self, run_id: str, status: str, action: str, allowed: str, hint: str) -> None:
        super().__init__(run_id, status, action, allowed, hint)
        self.run_id, self.status, self.action, self.allowed, self.hint = run_id, status, action, allowed, hint

    def describe(self) -> str:
        return f"Run {self.run_id!r} is {self.status}: only {self.allowed} runs can be {self.action}. {self.hint}"


class SeqOutOfRange(DurableError, ValueError):
    """A seq given for a run (fork's at_seq) is past the end of its journal."""

    def __init__(self, run_id: str, at_seq: int, end: int) -> None:
        super().__init__(run_id, at_seq, end)
        self.run_id, self.at_seq, self.end = run_id, at_seq, end

    def describe(self) -> str:
        last = f"records up to seq {self.end - 1}" if self.end else "no records"
        return (
            f"Run {self.run_id!r} has {last}; at_seq={self.at_seq} must be between 0 and {self.end} "
            f"({self.end} copies every record)."
        )


class RunExists(DurableError):
    """A new run was asked for under a run_id that is taken."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def describe(self) -> str:
        return f"A run {self.run_id!r} already exists; nothing was written. Choose another run_id, or leave it out for a fresh one."


class NondeterminismError(DurableError):
    """Replay met a call that differs from the one recorded at the same seq."""

    def __init__(self, run_id: str, seq: int, recorded: str, called: str) -> None:
        super().__init__(run_id, seq, recorded, called)
        self.run_id, self.seq, self.recorded, self.called = run_id, seq, recorded, called

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} at seq {self.seq}: the journal recorded {self.recorded} "
            f"but the workflow now called {self.called}. The workflow code changed or is not "
            "deterministic; the journal is untouched and the run is blocked. Restore the old "
            "order of ctx calls (or branch on data, not on time or randomness), then run it again."
        )


class SignatureChanged(NondeterminismError):
    """A run's recorded arguments no longer bind to its workflow's parameters: the code changed."""

    def __init__(self, run_id: str, workflow: str, reason: str) -> None:
        DurableError.__init__(self, run_id, workflow, reason)
        self.run_id, self.workflow, self.reason = run_id, workflow, reason
        self.seq, self.recorded, self.called = -1, "the run's arguments", "a new signature"

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} was started with arguments that no longer fit workflow {self.workflow!r}: "
            f"{self.reason}. Its parameters changed since; the run is blocked and its journal untouched. "
            "Restore the old parameters (or give new ones defaults), then run it again."
        )


class UnreadableRecord(NondeterminismError):
    """A recorded value that no longer decodes: its annotation changed, or the journal was damaged."""

    def __init__(self, run_id: str, seq: int, recorded: str, reason: str) -> None:
        DurableError.__init__(self, run_id, seq, recorded, reason)
        self.run_id, self.seq, self.recorded, self.reason = run_id, seq, recorded, reason
        self.called = recorded

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} at seq {self.seq}: the recorded value of {self.recorded} cannot be read back "
            f"({self.reason}). Its type annotation changed, or the journal is damaged; the run is blocked and its "
            "journal untouched. Restore the old annotation (or the journal from a backup), then run it again."
        )


class UnsafeRace(NondeterminismError):
    """ctx calls awaited through asyncio.wait or asyncio.as_completed, whose completion order no journal records."""

    def __init__(self, run_id: str, race: str) -> None:
        DurableError.__init__(self, run_id, race)
        self.run_id, self.race, self.seq, self.recorded, self.called = run_id, race, -1, "", race

    def describe(self) -> str:
        fix = "ctx.as_completed(aws)" if self.race.endswith("as_completed") else "ctx.wait(aws, return_when=...)"
        return (
            f"Run {self.run_id!r} awaited ctx calls through {self.race}: which one finishes first is not recorded, so a "
            f"replay could take another branch. The run is blocked and its journal untouched. Use {fix} instead "
            "(it records the order), then run it again."
        )


class StepFailed(DurableError):
    """A step failed with an error whose type cannot be rebuilt here."""

    def __init__(self, step: str, type_name: str, message: str) -> None:
        super().__init__(step, type_name, message)
        self.step, self.type_name, self.message = step, type_name, message

    def describe(self) -> str:
        return f"Step {self.step!r} failed with {self.type_name}: {self.message}"


class StepTimeout(DurableError, TimeoutError):
    """A step attempt ran longer than its timeout."""

    def __init__(self, step: str, timeout_seconds: float) -> None:
        super().__init__(step, timeout_seconds)
        self.step, self.timeout_seconds = step, timeout_seconds

    def describe(self) -> str:
        return (
            f"Step {self.step!r} did not finish within {self.timeout_seconds:g} s. "
            "Raise its timeout with @durable.step(timeout=...) or give it retries."
        )


class NotInWorkflow(DurableError):
    """A Context was used after its run ended or outside its workflow."""

    def __init__(self, run_id: str, call: str) -> None:
        super().__init__(run_id, call)
        self.run_id, self.call = run_id, call

    def describe(self) -> str:
        return (
            f"ctx.{self.call} was called for run {self.run_id!r} after that run stopped executing. "
            "Only call ctx methods from inside the workflow function while it runs."
        )


class DuplicatePromptKey(DurableError):
    """Two prompts in one run were given the same key."""

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(run_id, key)
        self.run_id, self.key = run_id, key

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} already asked a prompt with key {self.key!r}. "
            "Give each ctx.ask in a run its own key."
        )


class PromptNotFound(DurableError):
    """No pending prompt has that key in that run."""

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(run_id, key)
        self.run_id, self.key = run_id, key

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} has no prompt with key {self.key!r} waiting for an answer. "
            "List pending prompts with `durable prompts` or app.prompts()."
        )


class PromptAlreadyAnswered(DurableError):
    """The prompt was answered before; answers are recorded exactly once."""

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(run_id, key)
        self.run_id, self.key = run_id, key

    def describe(self) -> str:
        return (
            f"Prompt {self.key!r} of run {self.run_id!r} has already been answered; "
            "the first answer stands. See it with `durable show RUN_ID`."
        )


class PromptExpired(DurableError):
    """A prompt's timeout passed with no answer: raised in the workflow (when it gave no default), and to a late answerer."""

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(run_id, key)
        self.run_id, self.key = run_id, key

    def describe(self) -> str:
        return (
            f"Prompt {self.key!r} of run {self.run_id!r} expired: its timeout passed with no answer, so it takes "
            "none any more. Give ctx.ask a default= to go on without one."
        )


class InvalidMessage(DurableError):
    """A message a run received does not fit the type its ctx.receive asked for (raised in the workflow)."""

    def __init__(self, run_id: str, topic: str, reason: str) -> None:
        super().__init__(run_id, topic, reason)
        self.run_id, self.topic, self.reason = run_id, topic, reason

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} received a message on {self.topic!r} that does not fit ctx.receive's type: "
            f"{self.reason}. The message is consumed; catch InvalidMessage in the workflow to go on without it."
        )


class ReceiveTimedOut(DurableError, TimeoutError):
    """ctx.receive's timeout passed with no message on its topic, and no default was given."""

    def __init__(self, run_id: str, topic: str, timeout: float | None) -> None:
        super().__init__(run_id, topic, timeout)
        self.run_id, self.topic, self.timeout = run_id, topic, timeout

    def describe(self) -> str:
        return (
            f"Run {self.run_id!r} received no message on {self.topic!r} within {self.timeout:g} s. "
            "Give ctx.receive a default= to go on without one."
        )


class InvalidAnswer(DurableError):
    """The answer does not validate against the prompt's JSON schema; nothing was written."""

    def __init__(self, run_id: str, key: str, reason: str) -> None:
        super().__init__(run_id, key, reason)
        self.run_id, self.key, self.reason = run_id, key, reason

    def describe(self) -> str:
        return (
            f"The answer to prompt {self.key!r} of run {self.run_id!r} was rejected: {self.reason}. "
            "Nothing was recorded; answer again with a value matching the prompt's schema."
        )


class AppNotOpen(DurableError):
    """The App was used before ``async with app:`` opened its journal."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def describe(self) -> str:
        return f"The App for {self.path!r} is not open. Use it inside `async with app:` " "(or await app.open() first)."


class JournalError(DurableError):
    """The journal file cannot be used: corrupt, not a durable journal, or too new."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def describe(self) -> str:
        return f"Cannot use {self.path!r} as a durable journal: {self.reason}"


class StoreUnavailable(DurableError):
    """The store cannot be read or written for now; nothing about the runs was decided by it.

    Raised for faults that may pass: a full disk, an I/O error, a file locked by
    another program for longer than durable waits, a lost database connection.
    An execution that meets one stops and its run stays resumable; it is never
    recorded as the run's failure.
    """

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(target, reason)
        self.target, self.reason = target, reason

    def describe(self) -> str:
        return (
            f"The journal {self.target!r} cannot be used right now: {self.reason}. "
            "No run was failed by it: runs resume once the journal works again."
        )


class UnsafeBind(DurableError):
    """`durable serve` was asked to listen beyond this machine without tokens ($DURABLE_TOKENS or $DURABLE_TOKEN)."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host

    def describe(self) -> str:
        return (
            f"Refusing to serve on {self.host!r} without a token: anyone who reaches it could start, "
            "cancel and answer runs. Give each person a token (DURABLE_TOKENS=FILE, then durable token add NAME) or "
            "set DURABLE_TOKEN to one secret (clients send 'Authorization: Bearer <token>'), or bind 127.0.0.1."
        )
