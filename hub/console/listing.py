"""The one list helper every console table uses: a filter per column, sorting, pagination and a
CSV export of the filtered, sorted rows (every page of them, in the order shown).

Rows come from the domain services already scoped to the caller; this module only narrows and
orders what the caller may see.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

PER_PAGE = 25


@dataclass(frozen=True)
class Column:
    """One column of a console table: how to show, link and filter its value."""
    key: str
    label: str
    kind: str = "text"  # text | bool | int | date
    link: Callable[[Mapping[str, Any]], str] | None = None
    filter: bool = True

    def text(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            return ""
        if self.kind == "bool":
            return "Yes" if value else "No"
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return str(value)


@dataclass
class Listing:
    """One page of a console table after filtering and sorting, ready to render."""
    columns: Sequence[Column]
    rows: list[Mapping[str, Any]]
    total: int
    page: int
    pages: int
    sort: str | None
    descending: bool
    filters: dict[str, str]
    path: str
    all_rows: list[Mapping[str, Any]] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)  # the page's own parameters (e.g. a status)

    def url(self, **changes: Any) -> str:
        params: dict[str, Any] = {**self.keep, **{k: v for k, v in self.filters.items() if v}}
        if self.sort:
            params["sort"], params["dir"] = self.sort, "desc" if self.descending else "asc"
        if self.page > 1:
            params["page"] = self.page
        params.update({k: v for k, v in changes.items()})
        params = {k: v for k, v in params.items() if v not in (None, "")}
        return f"{self.path}?{urlencode(params)}" if params else self.path

    def sort_url(self, key: str) -> str:
        desc = self.sort == key and not self.descending
        return self.url(sort=key, dir="desc" if desc else "asc", page=None)

    def aria_sort(self, key: str) -> str | None:
        if self.sort != key:
            return None
        return "descending" if self.descending else "ascending"


def _matches(col: Column, row: Mapping[str, Any], wanted: str) -> bool:
    if col.kind == "bool":
        want = wanted.lower() in ("yes", "true", "1")
        return bool(row.get(col.key)) is want
    return wanted.lower() in col.text(row).lower()


def _sort_key(col: Column) -> Callable[[Mapping[str, Any]], Any]:
    def key(row: Mapping[str, Any]) -> Any:
        value = row.get(col.key)
        if col.kind in ("int", "bool") and value is not None:
            return (0, value, "")
        return (1 if value is None else 0, 0, col.text(row).lower())
    return key


def build(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column], query: Mapping[str, str],
          path: str, per_page: int = PER_PAGE, keep: Sequence[str] = ()) -> Listing:
    """Filter, sort and paginate ``rows`` by the query string (``f_<key>``, ``sort``, ``dir``, ``page``)."""
    by_key = {c.key: c for c in columns}
    filters = {c.key: query.get(f"f_{c.key}", "").strip() for c in columns if c.filter}
    selected = [r for r in rows if all(_matches(by_key[k], r, v) for k, v in filters.items() if v)]
    sort = query.get("sort")
    descending = query.get("dir") == "desc"
    if sort in by_key:
        selected.sort(key=_sort_key(by_key[sort]), reverse=descending)
    else:
        sort = None
    pages = max(1, math.ceil(len(selected) / per_page))
    try:
        page = min(max(1, int(query.get("page", "1"))), pages)
    except ValueError:
        page = 1
    shown = selected[(page - 1) * per_page: page * per_page]
    return Listing(columns, shown, len(selected), page, pages, sort, descending,
                   {f"f_{k}": v for k, v in filters.items()}, path, selected,
                   {k: query[k] for k in keep if query.get(k)})


def csv_response(listing: Listing, filename: str) -> web.Response:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.label for c in listing.columns])
    for row in listing.all_rows:
        w.writerow([_cell(c.text(row)) for c in listing.columns])
    return web.Response(body=buf.getvalue().encode(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _cell(text: str) -> str:
    # a cell a spreadsheet would run as a formula is quoted as text
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
