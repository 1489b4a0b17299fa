"""Queries: what a search asks for, as weighted text and image terms, before anything is encoded.

Query.text("beach") + 0.5 * Query.text("sunset") - Query.text("people")
parse_query('"beach" + 0.5*"sunset" - "people"')   # the same query, as the CLI writes it
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from crossmodal.errors import CrossmodalError


class QuerySyntaxError(CrossmodalError, ValueError):
    """A composed query string could not be parsed; says where and shows the valid forms."""

    def __init__(self, query: str, position: int, reason: str) -> None:
        self.query = query
        self.position = position
        self.reason = reason
        super().__init__(
            f"cannot read query at character {position + 1}: {reason}\n"
            f"  {query}\n  {' ' * position}^\n"
            "Valid forms: plain words (one text query), or terms joined by + and -, each an "
            'optional weight and * then "quoted text" or @image.jpg (@"path with spaces.jpg"), '
            'e.g.  "beach" + 0.5*"sunset" - "people"   or   @me.jpg + "at night"'
        )


@dataclass(frozen=True)
class Term:
    """One weighted part of a query: a text, or the path of an image."""

    weight: float
    text: str | None = None
    image: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise ValueError("a term is either a text or an image, not both or neither")

    def describe(self) -> str:
        atom = f'"{self.text}"' if self.text is not None else f"@{self.image}"
        return atom if self.weight == 1 else f"{self.weight:g}*{atom}"


@dataclass(frozen=True)
class Query:
    """A weighted sum of terms. The search vector is the normalised sum of each term's
    normalised vector times its weight; a negative weight pushes results away from that term."""

    terms: tuple[Term, ...]

    @classmethod
    def text(cls, text: str, weight: float = 1.0) -> Query:
        if not text.strip():
            raise CrossmodalError("the text query is empty; type what the photo should show")
        return cls((Term(weight, text=text.strip()),))

    @classmethod
    def image(cls, path: str | os.PathLike[str], weight: float = 1.0) -> Query:
        return cls((Term(weight, image=str(path)),))

    def __add__(self, other: Query) -> Query:
        return Query(self.terms + other.terms)

    def __sub__(self, other: Query) -> Query:
        return self + (-1.0) * other

    def __mul__(self, weight: float) -> Query:
        return Query(tuple(Term(t.weight * weight, t.text, t.image) for t in self.terms))

    __rmul__ = __mul__

    def __neg__(self) -> Query:
        return -1.0 * self

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.terms if t.text is not None]

    @property
    def keywords(self) -> str:
        """The words a keyword (full-text) search should look for: the positive texts."""
        return " ".join(t.text for t in self.terms if t.text is not None and t.weight > 0)

    def describe(self) -> str:
        out = ""
        for term in self.terms:
            sign = "-" if term.weight < 0 else "+"
            body = Term(abs(term.weight), term.text, term.image).describe()
            out = body if not out and sign == "+" else f"{out} {sign} {body}".strip()
        return out


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<op>[+\-])
    | (?P<number>\d+(?:\.\d*)?|\.\d+)\s*\*
    | "(?P<dq>[^"]*)"
    | '(?P<sq>[^']*)'
    | @"(?P<image_dq>[^"]+)"
    | @'(?P<image_sq>[^']+)'
    | @(?P<image>[^\s"']+)
    )""",
    re.VERBOSE,
)


def is_composed(query: str) -> bool:
    """Whether a query string uses the composition syntax (a quoted term or an @image);
    otherwise the whole string is one text query, hyphens and all."""
    stripped = query.strip()
    return stripped.startswith(("@", '"', "'", "-", "+")) or bool(
        re.search(r"""[+\-*]\s*["'@]|["']\s*[+\-]""", stripped)
    )


def parse_query(query: str) -> Query:
    """Read a query string: plain words are one text term; otherwise weighted terms.

    `"beach" + 0.5*"sunset" - "people"`, `@photo.jpg - "snow"`, `-0.3*@ugly.jpg + "cat"`.
    """
    if not query.strip():
        raise CrossmodalError("the query is empty; type what the photo should show")
    if not is_composed(query):
        return Query.text(query)
    terms: list[Term] = []
    position = 0
    sign, weight, expecting_operator = 1.0, None, False
    while position < len(query):
        if not query[position:].strip():
            break
        match = _TOKEN.match(query, position)
        if match is None:
            start = len(query) - len(query[position:].lstrip())
            raise QuerySyntaxError(query, start, "expected a quoted text, an @image or + / -")
        start = match.start() + len(match.group(0)) - len(match.group(0).lstrip())
        kind = match.lastgroup
        if kind == "op":
            if weight is not None:
                raise QuerySyntaxError(query, start, "a weight must be followed by a term")
            if expecting_operator:
                sign, expecting_operator = (1.0 if match.group("op") == "+" else -1.0), False
            else:
                sign *= 1.0 if match.group("op") == "+" else -1.0
        elif expecting_operator:
            raise QuerySyntaxError(query, start, "join terms with + or -")
        elif kind == "number":
            if weight is not None:
                raise QuerySyntaxError(query, start, "two weights in a row")
            weight = float(match.group("number"))
        else:
            value = match.group(kind or 0)
            if kind in ("dq", "sq"):
                if not value.strip():
                    raise QuerySyntaxError(query, start, "empty quoted text")
                term = Term(sign * (1.0 if weight is None else weight), text=value.strip())
            else:
                term = Term(sign * (1.0 if weight is None else weight), image=_expand(value))
            terms.append(term)
            sign, weight, expecting_operator = 1.0, None, True
        position = match.end()
    if weight is not None or not expecting_operator:
        raise QuerySyntaxError(query, len(query.rstrip()), "the query ends without a term")
    return Query(tuple(terms))


def _expand(path: str) -> str:
    return str(Path(path).expanduser())
