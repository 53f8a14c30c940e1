"""Checks of the numbers and keys a user gives (recipe values, CLI arguments, keyword sections that
become a function's arguments), with one message shape: `<where>: must be <what>, got <value>` and
`<where>: unknown key (did you mean <key>?)`.

    Number(integer=True, low=1)              a positive integer
    Number(low=0, high=1, high_open=True)    a number in [0, 1)
    optional(rule)                           the rule, or null
    check_values(cfg, {"training.steps": POSITIVE_INT, ...})   every dotted path of a nested mapping
    check_call_keys("model", section, Class)  keys against a constructor's signature, values against
                                              the types of its annotations / defaults
    arg_type(POSITIVE_INT)                   an argparse `type=` with the same rule and message

Every failure is a `ValueError` (the CLI prints it as one line, exit code 2). A value that passes is
returned normalised (an integral float given for an integer becomes an int).
"""
from __future__ import annotations

import difflib
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

__all__ = ["Number", "Choice", "Flag", "Text", "ListOf", "optional", "POSITIVE_INT", "NONNEG_INT",
           "POSITIVE", "NONNEG", "FINITE", "FRACTION", "INT", "check_value", "check_values",
           "check_keys", "check_call_keys", "arg_type", "did_you_mean"]


class Rule:
    """What a value must be: `describe()` for the message, `convert(value)` → normalised value or
    None when it does not fit."""

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def convert(self, value: Any) -> Tuple[bool, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, where: str, value: Any) -> Any:
        ok, out = self.convert(value)
        if not ok:
            raise ValueError(f"{where}: must be {self.describe()}, got {value!r}")
        return out


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Number(Rule):
    """A finite real number (or an integer), optionally within bounds."""

    integer: bool = False
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        kind = "integer" if self.integer else "number"
        lo, hi = self.low, self.high
        if hi is None and lo is not None:
            if lo == 0 and self.low_open or (self.integer and lo == 1 and not self.low_open):
                return f"a positive {kind}"
            if lo == 0 and not self.low_open:
                return f"a non-negative {kind}"
            return f"{'an' if self.integer else 'a'} {kind} {'>' if self.low_open else '>='} {_bound(lo)}"
        if lo is None and hi is None:
            return f"{'an' if self.integer else 'a finite'} {kind}"
        if lo is None:
            return f"{'an' if self.integer else 'a'} {kind} {'<' if self.high_open else '<='} {_bound(hi)}"
        return (f"{'an' if self.integer else 'a'} {kind} in {'(' if self.low_open else '['}{_bound(lo)}, "
                f"{_bound(hi)}{')' if self.high_open else ']'}")

    def convert(self, value: Any) -> Tuple[bool, Any]:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                value = float(value.strip())
            except ValueError:
                return False, None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:  # numpy scalars
                import numpy as np

                if isinstance(value, np.generic) and not isinstance(value, np.bool_):
                    value = value.item()
                else:
                    return False, None
            except ImportError:  # pragma: no cover
                return False, None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False, None
        if isinstance(value, float) and not math.isfinite(value):
            return False, None
        if self.integer:
            if isinstance(value, float):
                if not value.is_integer():
                    return False, None
                value = int(value)
        lo, hi = self.low, self.high
        if lo is not None and (value <= lo if self.low_open else value < lo):
            return False, None
        if hi is not None and (value >= hi if self.high_open else value > hi):
            return False, None
        return True, value


@dataclass(frozen=True)
class Choice(Rule):
    options: Tuple[Any, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) if not isinstance(o, str) else o for o in self.options)

    def convert(self, value: Any) -> Tuple[bool, Any]:
        try:
            return (value in self.options), value
        except TypeError:  # unhashable / incomparable
            return False, None


class Flag(Rule):
    def describe(self) -> str:
        return "true or false"

    def convert(self, value: Any) -> Tuple[bool, Any]:
        return isinstance(value, bool), value


class Text(Rule):
    def describe(self) -> str:
        return "a non-empty string"

    def convert(self, value: Any) -> Tuple[bool, Any]:
        return isinstance(value, str) and bool(value), value


@dataclass(frozen=True)
class ListOf(Rule):
    """A list of values that each pass `item`; `single=True` also takes one bare value (→ [value])."""

    item: Rule
    single: bool = False
    min_len: int = 0

    def describe(self) -> str:
        what = f"a list of {_plural(self.item.describe())}"
        if self.min_len:
            what = f"a list of at least {self.min_len} {_plural(self.item.describe())}"
        return f"{self.item.describe()} or {what}" if self.single else what

    def convert(self, value: Any) -> Tuple[bool, Any]:
        if self.single and not isinstance(value, (list, tuple)):
            ok, v = self.item.convert(value)
            return (ok, [v]) if ok else (False, None)
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            return False, None
        out = []
        for v in value:
            ok, v = self.item.convert(v)
            if not ok:
                return False, None
            out.append(v)
        return True, out


@dataclass(frozen=True)
class _Optional(Rule):
    rule: Rule

    def describe(self) -> str:
        return f"{self.rule.describe()} or null"

    def convert(self, value: Any) -> Tuple[bool, Any]:
        return (True, None) if value is None else self.rule.convert(value)


def optional(rule: Rule) -> Rule:
    """`rule`, or None (YAML null)."""
    return _Optional(rule)


def _plural(what: str) -> str:
    for art in ("an ", "a "):
        if what.startswith(art):
            what = what[len(art):]
            break
    return what.replace("integer", "integers").replace("number", "numbers").replace("string", "strings")


INT = Number(integer=True)
POSITIVE_INT = Number(integer=True, low=1)
NONNEG_INT = Number(integer=True, low=0)
FINITE = Number()
POSITIVE = Number(low=0, low_open=True)
NONNEG = Number(low=0)
FRACTION = Number(low=0, high=1, high_open=True)


def check_value(where: str, value: Any, rule: Rule) -> Any:
    """`value` normalised, or a ValueError `<where>: must be <rule>, got <value>`."""
    return rule.check(where, value)


def did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(map(str, known)))})"


def check_keys(where: str, section: Mapping[str, Any], known: Iterable[str], what: str = "key") -> None:
    """Every key of `section` is in `known`; else `<where>.<key>: unknown <what> (did you mean ...?)`."""
    known = list(known)
    for k in section:
        if k not in known:
            raise ValueError(f"{where + '.' if where else ''}{k}: unknown {what}{did_you_mean(k, known)}")


def check_values(cfg: Mapping[str, Any], rules: Mapping[str, Rule], prefix: str = "") -> None:
    """Check (and normalise in place) every dotted path of `rules` present in the nested mapping `cfg`."""
    for path, rule in rules.items():
        node: Any = cfg
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, Mapping) else None
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = rule.check(prefix + path, node[parts[-1]])


def _rule_of_type(tp: Any) -> Optional[Rule]:
    """The rule for an annotation (int, float, bool, str, Optional[..], List/Sequence/Tuple[..]); None
    when the annotation says nothing checkable (Any, dicts, ...)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is bool:
        return Flag()
    if tp is int:
        return INT
    if tp is float:
        return FINITE
    if tp is str:
        return Text()
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner = _rule_of_type(rest[0])
            return optional(inner) if inner is not None else None
        return None
    import collections.abc as cabc

    if origin in (list, tuple, cabc.Sequence) and args:
        inner = _rule_of_type(args[0])
        return ListOf(inner) if inner is not None else None
    return None


def _signature_rules(fn: Callable) -> Dict[str, Optional[Rule]]:
    """{keyword parameter: rule or None} of a function or class constructor."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    sig = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    rules: Dict[str, Optional[Rule]] = {}
    for name, par in sig.parameters.items():
        if name == "self" or par.kind in (par.VAR_POSITIONAL, par.VAR_KEYWORD):
            continue
        rule = _rule_of_type(hints[name]) if name in hints else None
        if rule is None and par.default is not inspect.Parameter.empty and par.default is not None:
            rule = _rule_of_type(type(par.default))
        if rule is not None and par.default is None and not isinstance(rule, _Optional):
            rule = optional(rule)
        rules[name] = rule
    return rules


def check_call_keys(where: str, section: Dict[str, Any], *functions: Callable,
                    extra: Mapping[str, Rule] = {}, what: str = "key") -> None:
    """The keys of `section` (keyword arguments of one of `functions`, or of `extra`) are known, and
    their values fit the parameters' annotations (float: a finite number, int: an integer, bool,
    str, Optional/List of those); `extra` gives rules for keys that are not parameters. Values are
    normalised in place. Errors: `<where>.<key>: unknown key (did you mean ...?)`,
    `<where>.<key>: must be ..., got ...`."""
    rules: Dict[str, Optional[Rule]] = {}
    for fn in functions:
        for k, v in _signature_rules(fn).items():
            rules.setdefault(k, v)
    rules.update(extra)
    check_keys(where, section, rules, what)
    for k, rule in rules.items():
        if k in section and rule is not None:
            section[k] = rule.check(f"{where}.{k}", section[k])


def arg_type(rule: Rule) -> Callable[[str], Any]:
    """An argparse `type=` that parses a number and applies `rule` (argparse prints
    `argument --x: must be a positive integer, got '-3'` and exits 2)."""
    import argparse

    integer = isinstance(rule, Number) and rule.integer

    def parse(text: str) -> Any:
        try:
            value: Any = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}") from None
        ok, out = rule.convert(value)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}")
        return out

    parse.__name__ = rule.describe()
    return parse
