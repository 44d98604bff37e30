"""A safe evaluator for SPICE arithmetic (``.param`` values and ``{expression}`` element values).

No Python ``eval``: a small recursive-descent parser over this grammar (case-insensitive, ASCII)::

    expr    := cond ['?' expr ':' expr]
    cond    := and {'||' and}
    and     := cmp {'&&' cmp}
    cmp     := sum [('==' | '!=' | '<' | '<=' | '>' | '>=') sum]
    sum     := product {('+' | '-') product}
    product := unary {('*' | '/' | '%') unary}
    unary   := ('-' | '+' | '!') unary | power
    power   := atom [('^' | '**') unary]            (right-associative)
    atom    := NUMBER | NAME | NAME '(' [expr {',' expr}] ')' | '(' expr ')'

Numbers take SPICE's engineering suffixes (``f p n u m k meg g t mil``; trailing unit letters are
ignored, ``10kohm``). Names are parameters (looked up through a callable) or the constant ``pi``.
Functions: ``sqrt exp ln log (natural, as in ngspice) log10 abs sin cos tan asin acos atan atan2
sinh cosh tanh floor ceil int nint sgn min max pow pwr hypot``; user functions from ``.func``.
Comparisons and logic give 1.0 or 0.0. Every error (syntax, unknown name, domain, division by
zero, overflow) is an :class:`ExpressionError` with a message naming the expression.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Mapping, Optional

from physgrad.types import PhysgradError

SUFFIXES = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "meg": 1e6, "g": 1e9, "t": 1e12,
            "mil": 25.4e-6}
NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?", re.IGNORECASE)
_NUMBER_TOKEN = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(meg|mil|[fpnumkgt])?([a-z]*)$")
MAX_LENGTH = 20000   # characters of one expression
MAX_DEPTH = 60       # nesting of parentheses, unary operators and function calls
CONSTANTS = {"pi": math.pi}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class ExpressionError(PhysgradError):
    """A SPICE expression that cannot be evaluated; the message names the expression."""


def parse_number(token: str) -> float:
    """SPICE number with engineering suffix (``4.7k``, ``1meg``, ``10u``, ``5V``); ValueError if not."""
    m = _NUMBER_TOKEN.match(token.strip().translate(_ASCII_LOWER))
    if not m:
        raise ValueError(f"not a number: {token!r}")
    value = float(m.group(1))
    if m.group(2):
        value *= SUFFIXES[m.group(2)]
    return value


def _sgn(x):
    return float((x > 0) - (x < 0))


def _pwr(x, y):
    return _sgn(x) * abs(x) ** y


FUNCTIONS: Mapping[str, tuple] = {
    "sqrt": (1, math.sqrt), "exp": (1, math.exp), "ln": (1, math.log), "log": (1, math.log),
    "log10": (1, math.log10), "abs": (1, abs), "sin": (1, math.sin), "cos": (1, math.cos),
    "tan": (1, math.tan), "asin": (1, math.asin), "acos": (1, math.acos), "atan": (1, math.atan),
    "atan2": (2, math.atan2), "sinh": (1, math.sinh), "cosh": (1, math.cosh), "tanh": (1, math.tanh),
    "floor": (1, math.floor), "ceil": (1, math.ceil), "int": (1, math.trunc), "nint": (1, round),
    "sgn": (1, _sgn), "sign": (1, _sgn), "min": (2, min), "max": (2, max), "pow": (2, math.pow),
    "pwr": (2, _pwr), "hypot": (2, math.hypot),
}

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
                    r"|(?P<op>\*\*|==|!=|<=|>=|&&|\|\||[-+*/%^(),?:<>!]))")


class UserFunction:
    """A ``.func name(a, b) {expr}`` definition."""

    def __init__(self, name: str, args: tuple, body: str):
        self.name, self.args, self.body = name, args, body


def _tokens(text: str, where: str):
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"{where}: cannot read {text[pos:pos + 20]!r} in expression {text!r}")
        pos = m.end()
        if m.group("num") is not None:
            tok = m.group("num")
            try:
                out.append(("num", parse_number(tok)))
            except ValueError:
                raise ExpressionError(f"{where}: {tok!r} is not a number (in expression {text!r})") from None
        elif m.group("name") is not None:
            out.append(("name", m.group("name").translate(_ASCII_LOWER)))
        else:
            out.append(("op", m.group("op")))
    return out


class _Parser:
    def __init__(self, text: str, lookup: Callable[[str], float], where: str,
                 functions: Optional[Mapping[str, UserFunction]], depth: int):
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"{where}: expression longer than {MAX_LENGTH} characters")
        self.text, self.lookup, self.where = text, lookup, where
        self.functions = functions or {}
        self.toks = _tokens(text, where)
        self.i = 0
        self.depth = depth

    def fail(self, why: str):
        raise ExpressionError(f"{self.where}: {why} in expression {self.text!r}")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else ("end", None)

    def take(self, op=None):
        tok = self.peek()
        if op is not None and tok != ("op", op):
            self.fail(f"expected {op!r}" + (f" but found {tok[1]!r}" if tok[0] != "end" else " at the end"))
        self.i += 1
        return tok

    def nest(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH}")

    def parse(self) -> float:
        if not self.toks:
            self.fail("empty expression")
        value = self.expr()
        if self.peek()[0] != "end":
            self.fail(f"unexpected {self.peek()[1]!r}")
        return value

    def expr(self):
        self.nest()
        c = self.cond()
        if self.peek() == ("op", "?"):
            self.take()
            a = self.expr()
            self.take(":")
            b = self.expr()
            c = a if c != 0 else b
        self.depth -= 1
        return c

    def cond(self):
        v = self.land()
        while self.peek() == ("op", "||"):
            self.take()
            w = self.land()
            v = float(bool(v) or bool(w))
        return v

    def land(self):
        v = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            w = self.cmp()
            v = float(bool(v) and bool(w))
        return v

    def cmp(self):
        v = self.sum()
        tok = self.peek()
        if tok[0] == "op" and tok[1] in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            w = self.sum()
            v = float({"==": v == w, "!=": v != w, "<": v < w, "<=": v <= w, ">": v > w, ">=": v >= w}[tok[1]])
        return v

    def sum(self):
        v = self.product()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            w = self.product()
            v = v + w if op == "+" else v - w
        return v

    def product(self):
        v = self.unary()
        while self.peek() in (("op", "*"), ("op", "/"), ("op", "%")):
            op = self.take()[1]
            w = self.unary()
            if op == "*":
                v = v * w
            elif w == 0:
                self.fail("division by zero")
            else:
                v = v / w if op == "/" else math.fmod(v, w)
        return v

    def unary(self):
        tok = self.peek()
        if tok in (("op", "-"), ("op", "+"), ("op", "!")):
            self.take()
            self.nest()
            v = self.unary()
            self.depth -= 1
            return -v if tok[1] == "-" else (float(v == 0) if tok[1] == "!" else v)
        return self.power()

    def power(self):
        v = self.atom()
        if self.peek() in (("op", "^"), ("op", "**")):
            self.take()
            self.nest()
            w = self.unary()
            self.depth -= 1
            try:
                r = v ** w
            except ZeroDivisionError:
                self.fail("0 raised to a negative power")
            except OverflowError:
                self.fail("overflow")
            if isinstance(r, complex):
                self.fail("a negative number raised to a fractional power")
            v = r
        return v

    def atom(self):
        kind, val = self.take()
        if kind == "num":
            return val
        if kind == "name":
            if self.peek() == ("op", "("):
                self.take()
                args = []
                if self.peek() != ("op", ")"):
                    args.append(self.expr())
                    while self.peek() == ("op", ","):
                        self.take()
                        args.append(self.expr())
                self.take(")")
                return self.call(val, args)
            if val in CONSTANTS:
                return CONSTANTS[val]
            return self.lookup(val)
        if (kind, val) == ("op", "("):
            v = self.expr()
            self.take(")")
            return v
        self.fail("unexpected end" if kind == "end" else f"unexpected {val!r}")

    def call(self, name, args):
        if name in self.functions:
            fn = self.functions[name]
            if len(args) != len(fn.args):
                self.fail(f"function {name} takes {len(fn.args)} argument(s), got {len(args)}")
            bound = dict(zip(fn.args, args))

            def lookup(n):
                return bound[n] if n in bound else self.lookup(n)

            return evaluate(fn.body, lookup, self.where, self.functions, self.depth + 1)
        if name not in FUNCTIONS:
            self.fail(f"unknown function {name!r}")
        arity, fn = FUNCTIONS[name]
        if len(args) != arity:
            self.fail(f"function {name} takes {arity} argument(s), got {len(args)}")
        try:
            return float(fn(*args))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{name}{tuple(args)} is undefined")
        except OverflowError:
            self.fail(f"{name}{tuple(args)} overflows")


def evaluate(text: str, lookup: Callable[[str], float], where: str = "<expression>",
             functions: Optional[Mapping[str, UserFunction]] = None, depth: int = 0) -> float:
    """Value of the SPICE expression ``text`` (a finite float).

    Parameters
    ----------
    text : str
        The expression, without braces.
    lookup : callable
        ``lookup(name) -> float`` for parameters; raises :class:`ExpressionError` (or any
        :class:`PhysgradError`) for unknown names.
    where : str
        ``file:line`` for messages.
    functions : mapping, optional
        User functions (``.func``) by name.
    """
    if depth > MAX_DEPTH:
        raise ExpressionError(f"{where}: functions nested deeper than {MAX_DEPTH}")
    try:
        value = _Parser(text, lookup, where, functions, depth).parse()
    except RecursionError:
        raise ExpressionError(f"{where}: expression nested too deeply: {text[:60]!r}...") from None
    if not math.isfinite(value):
        raise ExpressionError(f"{where}: expression {text!r} is not finite ({value})")
    return float(value)
