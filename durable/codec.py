"""Values to JSON and back, by type annotation; exceptions to stored JSON and back.

Values are encoded with msgspec (never pickle). A value is decoded with the
annotation of the function that produced it, and the workflow is always handed
the *decoded* value, live and on replay alike, so nothing changes type after a
crash. pydantic models are handled through msgspec's hooks.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import functools
import importlib
import inspect
import traceback
import typing
from typing import Any

import msgspec
import pydantic

from .errors import DefinitionError, DurableError, EncodingError, StepFailed

__all__ = [
    "Codec",
    "decode_any",
    "encode",
    "error_from_json",
    "error_to_json",
    "from_timestamp",
    "schema_violation",
    "type_name",
]


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, pydantic.BaseModel):
        return obj.model_dump(mode="json")
    raise NotImplementedError(f"cannot encode objects of type {type_name(type(obj))}")


def _dec_hook(tp: Any, obj: Any) -> Any:
    if tp is object:  # "any value", nested where msgspec does not read it as Any
        return obj
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return tp.model_validate(obj)
    raise NotImplementedError(f"cannot decode into {type_name(tp)}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_any_decoder = msgspec.json.Decoder(dec_hook=_dec_hook)

# Decoding a value of these types, under an annotation of the same type or Any,
# gives the value back unchanged; skipping the round trip keeps the hot path lean.
_IDENTITY = frozenset({str, int, bool, type(None)})


def type_name(tp: Any) -> str:
    """Name a type the way a person would write it."""
    if isinstance(tp, type):
        return tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp).replace("typing.", "")


def encode(value: Any, what: str) -> bytes:
    """Encode a value to JSON; raise EncodingError naming `what` if it cannot be."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError, NotImplementedError) as exc:
        raise EncodingError(what, type_name(type(value)), str(exc)) from None


def decode_any(blob: bytes | None) -> Any:
    """Decode stored JSON without any type: plain dicts, lists, strings and numbers."""
    return None if blob is None else _any_decoder.decode(blob)


def from_timestamp(ts: float | None) -> _dt.datetime | None:
    return None if ts is None else _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)


@functools.lru_cache(maxsize=1024)
def _decoder(tp: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(tp, dec_hook=_dec_hook)


class Codec:
    """Encodes and decodes the values of one annotation."""

    __slots__ = ("decoder", "identity", "tp")

    def __init__(self, tp: Any) -> None:
        if tp is object:
            tp = Any  # "any value": msgspec spells it Any
        self.tp = tp
        try:
            self.decoder = _decoder(tp)
        except TypeError as exc:  # unhashable or unsupported annotation
            try:
                self.decoder = msgspec.json.Decoder(tp, dec_hook=_dec_hook)
            except TypeError:
                raise DefinitionError(
                    f"The annotation {type_name(tp)} cannot be stored by durable: {exc}. "
                    "Annotate with JSON types, datetime/date/UUID/Decimal/bytes/Enum, "
                    "dataclasses, msgspec.Struct or pydantic models."
                ) from None
        self.identity = tp if tp in _IDENTITY else (Any if tp is Any else None)

    def roundtrip(self, value: Any, what: str) -> tuple[bytes, Any]:
        """Encode a live value and return it decoded, exactly as a replay would see it."""
        blob = encode(value, what)
        kind = type(value)
        if self.identity is not None and kind in _IDENTITY and (self.identity is Any or kind is self.tp):
            return blob, value
        return blob, self.decode(blob, what)

    def decode(self, blob: bytes, what: str) -> Any:
        try:
            return self.decoder.decode(blob)
        except (msgspec.ValidationError, pydantic.ValidationError, NotImplementedError) as exc:
            raise EncodingError(what, type_name(self.tp), str(exc)) from None


@functools.lru_cache(maxsize=256)
def _validator(schema: str) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(msgspec.json.decode(schema), format_checker=jsonschema.FormatChecker())


def schema_violation(schema: str, value: Any) -> str | None:
    """Why a JSON value does not match a JSON schema (None when it does)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "".join(f"[{p!r}]" for p in error.absolute_path)
    return f"{error.message}{f' at answer{where}' if where else ''}"


def return_codec(fn: Any, what: str) -> Codec:
    """The codec for a callable's return annotation (Any when it has none)."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isroutine(target) or isinstance(target, type)):
        target = type(target).__call__  # a callable object: its __call__ carries the annotation
    try:
        hints = typing.get_type_hints(target)
    except Exception as exc:
        raise DefinitionError(
            f"The annotations of {what} cannot be resolved ({exc}). "
            "Define the annotated types at module level, or remove the annotation."
        ) from None
    return Codec(hints.get("return", Any))


class StoredError(msgspec.Struct, omit_defaults=True):
    """A step's or run's final error, as kept in the journal."""

    type: str
    message: str
    traceback: str = ""
    args: list[Any] | None = None
    step_seq: int | None = None  # a run's error: the seq of the step whose failure it is (what retry sets aside)
    causes: list[str] | None = None  # 'Type: message' of its cause, that one's cause, ... (raise ... from, or during)


_error_decoder = msgspec.json.Decoder(StoredError)


def error_to_json(exc: BaseException, step_seq: int | None = None) -> bytes:
    """Store an exception as JSON: its type, message, traceback, (if encodable) its args, and the step it came from."""
    tb = "".join(traceback.format_exception(exc))
    cls = type(exc)
    try:
        args = msgspec.json.decode(_encoder.encode(list(exc.args)))
    except (TypeError, ValueError, OverflowError, NotImplementedError):
        args = None
    causes, seen, cause = [], {id(exc)}, _cause(exc)
    while cause is not None and id(cause) not in seen and len(causes) < 10:
        seen.add(id(cause))
        causes.append(f"{type(cause).__qualname__}: {cause}")
        cause = _cause(cause)
    stored = StoredError(f"{cls.__module__}:{cls.__qualname__}", str(exc), tb, args, step_seq, causes or None)
    return _encoder.encode(stored)


def _cause(exc: BaseException) -> BaseException | None:
    return exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def failed_step(blob: bytes) -> int | None:
    """The seq of the step whose failure a stored run error is, if it is one."""
    try:
        return _error_decoder.decode(blob).step_seq
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def error_from_json(blob: bytes, step: str) -> BaseException:
    """Rebuild a stored exception as its own type, or StepFailed when the type cannot be rebuilt."""
    stored = _error_decoder.decode(blob)
    cls = _exception_class(stored.type)
    if cls is not None:
        try:
            exc = cls(*stored.args) if stored.args is not None else cls(stored.message)
        except Exception:
            exc = None
        if exc is not None and (isinstance(exc, DurableError) or str(exc) == stored.message):
            return exc
    return StepFailed(step, stored.type.replace(":", "."), stored.message)


def _exception_class(qualified: str) -> type[BaseException] | None:
    module_name, _, qualname = qualified.partition(":")
    try:
        obj: Any = builtins if module_name == "builtins" else importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None
