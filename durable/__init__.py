"""durable: durable workflows for Python, on an embedded SQLite journal or a shared PostgreSQL one."""

from .app import App, RunHandle
from .context import Context
from .errors import (
    AppNotOpen,
    DefinitionError,
    DuplicatePromptKey,
    DurableError,
    EncodingError,
    InvalidAnswer,
    InvalidArguments,
    JournalError,
    NondeterminismError,
    NotInWorkflow,
    PromptAlreadyAnswered,
    PromptNotFound,
    RunAlreadyFinished,
    RunCancelled,
    RunIdInUse,
    RunNotFound,
    SignatureChanged,
    StepFailed,
    StepTimeout,
    StoreUnavailable,
    UnreadableRecord,
    UnsafeBind,
    WorkflowNotFound,
)
from .model import CheckResult, Prompt, Record, Run
from .steps import step

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppNotOpen",
    "CheckResult",
    "Context",
    "DefinitionError",
    "DuplicatePromptKey",
    "DurableError",
    "EncodingError",
    "InvalidAnswer",
    "InvalidArguments",
    "JournalError",
    "NondeterminismError",
    "NotInWorkflow",
    "Prompt",
    "PromptAlreadyAnswered",
    "PromptNotFound",
    "Record",
    "Run",
    "RunAlreadyFinished",
    "RunCancelled",
    "RunHandle",
    "RunIdInUse",
    "RunNotFound",
    "SignatureChanged",
    "StepFailed",
    "StepTimeout",
    "StoreUnavailable",
    "UnreadableRecord",
    "UnsafeBind",
    "WorkflowNotFound",
    "step",
]
