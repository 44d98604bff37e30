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
zero, overflow) is an :class:`ExpressionError` with a message naming the expression; every
intermediate value must be finite (``1e200*1e200 > 1`` is an overflow, not ``1``).

Work is bounded: an optional :class:`Budget` counts the tokens evaluated (shared by every
expression of a deck), and user-function calls are memoized on their arguments and the values of
the names their bodies read (``memo``), so a chain of ``.func`` definitions that each call the
previous one twice costs linear, not exponential, time.
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
_PLAIN_START = frozenset("0123456789.+-")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class ExpressionError(PhysgradError):
    """A SPICE expression that cannot be evaluated; the message names the expression."""


def shown(text: str, limit: int = 80) -> str:
    """``repr(text)`` for a message, cut to ``limit`` characters (a token may be megabytes long)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} characters)"


def parse_number(token: str) -> float:
    """SPICE number with engineering suffix (``4.7k``, ``1meg``, ``10u``, ``5V``); ValueError if not."""
    if token[:1] in _PLAIN_START and "_" not in token and "n" not in token and "N" not in token:
        try:  # a plain decimal number ('123.4', '1e-3'), the common case: what float() reads
            return float(token)
        except ValueError:
            pass
    token = token.strip()
    m = _NUMBER_TOKEN.match(token.lower() if token.isascii() else token.translate(_ASCII_LOWER))
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


class Budget:
    """Expression tokens that one deck may still evaluate: ``limit`` in all and ``per_value`` for
    each top-level evaluation (a ``.param`` or an element value, the functions it calls included;
    a parameter it needs is evaluated on its own allowance)."""

    def __init__(self, limit: int, per_value: int):
        self.limit, self.left = int(limit), int(limit)
        self.per_value, self.value_left = int(per_value), int(per_value)

    def spend(self, n: int, where: str) -> None:
        self.left -= n
        self.value_left -= n
        if self.value_left < 0:
            raise ExpressionError(f"{where}: one value needs more than {self.per_value:,} expression tokens evaluated "
                                  "(a .func chain whose work multiplies?); raise the limit with "
                                  "max_eval_steps_per_value=...")
        if self.left < 0:
            raise ExpressionError(f"{where}: the deck needs more than {self.limit:,} expression tokens evaluated in "
                                  "all; raise the limit with max_eval_steps=...")


class UserFunction:
    """A ``.func name(a, b) {expr}`` definition."""

    def __init__(self, name: str, args: tuple, body: str):
        self.name, self.args, self.body = name, args, body
        self._tokens = None
        self._free = None

    def tokens(self, where: str) -> list:
        """The body's tokens (read once)."""
        if self._tokens is None:
            self._tokens = _tokens(self.body, where)
        return self._tokens

    def free_names(self, functions: Mapping[str, "UserFunction"], where: str) -> tuple:
        """Names the body reads that are not its arguments, through the user functions it calls
        (as they see the caller's names): what a call's value depends on besides its arguments."""
        if self._free is None:
            self._free = ()  # a function that calls itself: its own names are already counted
            names, toks = set(), self.tokens(where)
            for i, (kind, val) in enumerate(toks):
                if kind != "name" or val in CONSTANTS:
                    continue
                if i + 1 < len(toks) and toks[i + 1] == ("op", "("):
                    if val in functions and functions[val] is not self:
                        names.update(functions[val].free_names(functions, where))
                else:
                    names.add(val)
            self._free = tuple(sorted(names - set(self.args)))
        return self._free


def _tokens(text: str, where: str):
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"{where}: cannot read {text[pos:pos + 20]!r} in expression {shown(text)}")
        pos = m.end()
        if m.group("num") is not None:
            tok = m.group("num")
            try:
                out.append(("num", parse_number(tok)))
            except ValueError:
                raise ExpressionError(f"{where}: {shown(tok)} is not a number (in expression {shown(text)})") from None
        elif m.group("name") is not None:
            out.append(("name", m.group("name").translate(_ASCII_LOWER)))
        else:
            out.append(("op", m.group("op")))
    return out


def names_in(text: str) -> list:
    """The parameter names expression ``text`` reads (lower case; function names and constants
    left out); ``[]`` for text that does not tokenize (evaluating it reports the error)."""
    try:
        toks = _tokens(text, "")
    except ExpressionError:
        return []
    return [val for i, (kind, val) in enumerate(toks) if kind == "name" and val not in CONSTANTS
            and not (i + 1 < len(toks) and toks[i + 1] == ("op", "("))]


class _Parser:
    def __init__(self, text: str, lookup: Callable[[str], float], where: str,
                 functions: Optional[Mapping[str, UserFunction]], depth: int, budget: Optional[Budget] = None,
                 memo: Optional[dict] = None, toks: Optional[list] = None):
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"{where}: expression longer than {MAX_LENGTH} characters")
        self.text, self.lookup, self.where = text, lookup, where
        self.functions = functions or {}
        self.toks = _tokens(text, where) if toks is None else toks
        self.i = 0
        self.depth = depth
        self.budget, self.memo = budget, memo
        if budget is not None:
            budget.spend(len(self.toks) + 1, where)

    def finite(self, v, what: str):
        """``v`` if finite; else an overflow error naming the operation."""
        if v != v or v in (math.inf, -math.inf):
            self.fail(f"overflow: {what} is not finite ({v})")
        return v

    def fail(self, why: str):
        raise ExpressionError(f"{self.where}: {why} in expression {shown(self.text)}")

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
            v = self.finite(v + w if op == "+" else v - w, f"a {'sum' if op == '+' else 'difference'}")
        return v

    def product(self):
        v = self.unary()
        while self.peek() in (("op", "*"), ("op", "/"), ("op", "%")):
            op = self.take()[1]
            w = self.unary()
            if op == "*":
                v = self.finite(v * w, "a product")
            elif w == 0:
                self.fail("division by zero")
            else:
                v = self.finite(v / w, "a quotient") if op == "/" else math.fmod(v, w)
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
            v = self.finite(r, "a power")
        return v

    def atom(self):
        kind, val = self.take()
        if kind == "num":
            if val == math.inf:
                self.fail("overflow: a number too large for a float")
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
            key = None
            if self.memo is not None:  # the call's value depends on its arguments and the names its body reads
                key = (name, tuple(float(a).hex() for a in args),
                       tuple(float(self.lookup(n)).hex() for n in fn.free_names(self.functions, self.where)))
                if key in self.memo:
                    if self.budget is not None:
                        self.budget.spend(1, self.where)
                    return self.memo[key]
            bound = dict(zip(fn.args, args))
            outer = self.lookup

            def lookup(n):
                return bound[n] if n in bound else outer(n)

            value = evaluate(fn.body, lookup, self.where, self.functions, self.depth + 1, budget=self.budget,
                             memo=self.memo, _toks=fn.tokens(self.where))
            if key is not None:
                self.memo[key] = value
            return value
        if name not in FUNCTIONS:
            self.fail(f"unknown function {name!r}")
        arity, fn = FUNCTIONS[name]
        if len(args) != arity:
            self.fail(f"function {name} takes {arity} argument(s), got {len(args)}")
        try:
            value = float(fn(*args))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{name}{tuple(args)} is undefined")
        except OverflowError:
            self.fail(f"{name}{tuple(args)} overflows")
        return self.finite(value, f"{name}{tuple(args)}")


def evaluate(text: str, lookup: Callable[[str], float], where: str = "<expression>",
             functions: Optional[Mapping[str, UserFunction]] = None, depth: int = 0, *,
             budget: Optional[Budget] = None, memo: Optional[dict] = None, _toks: Optional[list] = None) -> float:
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
    budget : Budget, optional
        Tokens left to evaluate (spent by this call and the function calls it makes).
    memo : dict, optional
        Memo of user-function calls, shared by the calls of one deck (keys hold the arguments and
        the values of the names each body reads, so sharing is exact).
    """
    if depth > MAX_DEPTH:
        raise ExpressionError(f"{where}: functions nested deeper than {MAX_DEPTH}")
    saved = None
    if budget is not None and depth == 0:  # a top-level evaluation: its own allowance
        saved, budget.value_left = budget.value_left, budget.per_value
    try:
        value = _Parser(text, lookup, where, functions, depth, budget, memo, _toks).parse()
    except RecursionError:
        raise ExpressionError(f"{where}: expression nested too deeply: {text[:60]!r}...") from None
    finally:
        if saved is not None:
            budget.value_left = saved
    if not math.isfinite(value):
        raise ExpressionError(f"{where}: expression {shown(text)} is not finite ({value})")
    return float(value)
