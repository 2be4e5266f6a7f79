"""Field selection: `fields=slug,title,author.username` keeps only those fields of each
article in a response (a list needs no description or profile, a title page no body).

The selection is applied to the finished document, after the cache and the viewer's flags:
one cached document serves every selection, and nothing else changes (counts, cursors).
Unknown names are refused with 422, naming the fields there are.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import Invalid

AUTHOR_FIELDS = ("username", "bio", "image", "following")
SUMMARY_FIELDS = (
    "slug",
    "title",
    "description",
    "tagList",
    "createdAt",
    "updatedAt",
    "favorited",
    "favoritesCount",
    "author",
    *(f"author.{name}" for name in AUTHOR_FIELDS),
)
ARTICLE_FIELDS = (*SUMMARY_FIELDS, "body")  # a list never carries bodies

DESCRIPTION = (
    "Only these fields of each article, comma-separated (`author` is the whole profile, "
    "`author.username` one of its fields); the others are left out of the response. "
    "In lists: {}. One article also has `body`. Unknown names: 422."
).format(", ".join(f"`{name}`" for name in SUMMARY_FIELDS))


def pattern(names: Iterable[str]) -> str:
    """The parameter's language, for the OpenAPI document: these names, comma-separated, or
    blank (everything). `parse` enforces the same, with a message that names the fields."""
    name = "(?:" + "|".join(re.escape(n) for n in names) + ")"
    return rf"^\s*({name}\s*(,\s*{name}\s*)*)?$"


@dataclass(frozen=True, slots=True)
class Selection:
    """Top-level fields kept, and which of the author's (None: the whole profile)."""

    fields: frozenset[str]
    author: frozenset[str] | None

    def apply(self, document: str) -> str:
        tree = orjson.loads(document)
        if "article" in tree:
            tree["article"] = self._shape(tree["article"])
        else:
            tree["articles"] = [self._shape(article) for article in tree["articles"]]
        return orjson.dumps(tree).decode()

    def _shape(self, article: dict[str, Any]) -> dict[str, Any]:
        shaped = {name: value for name, value in article.items() if name in self.fields}
        if "author" in shaped and self.author is not None:
            shaped["author"] = {k: v for k, v in shaped["author"].items() if k in self.author}
        return shaped


def parse(raw: str | None, *, allowed: Iterable[str]) -> Selection | None:
    """The selection `raw` asks for; None (everything) when absent or blank."""
    names = [name.strip() for name in (raw or "").split(",") if name.strip()]
    if not names:
        return None
    known = tuple(allowed)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise Invalid(f"fields: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    author = {name.removeprefix("author.") for name in names if name.startswith("author.")}
    whole_author = "author" in names
    fields = {name for name in names if "." not in name}
    if author:
        fields.add("author")
    return Selection(frozenset(fields), None if whole_author or not author else frozenset(author))
