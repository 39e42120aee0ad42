"""Helpers of the console's form tests over plain HTTP: what a browser without JavaScript submits of a
page's targeting editor, the error shown next to a field, the page's CSRF token."""

from __future__ import annotations

import html
import re


def csrf(page: str) -> str:
    """The page's CSRF token (every console form carries it)."""
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m is not None
    return m[1]


def fields(page: str) -> dict[str, str]:
    """The editor form's fields as a browser would submit them (inputs, selected options, textareas)."""
    form = page[page.index('action="/console/flags/') : page.index("</form>", page.index("targeting-edit"))]
    out: dict[str, str] = {}
    for m in re.finditer(r'<input name="([^"]+)" type="(?:text|hidden)" value="([^"]*)"', form):
        out[m[1]] = html.unescape(m[2])
    for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        out[m[1]] = html.unescape(m[2])
    for m in re.finditer(r'<textarea name="([^"]+)"[^>]*>([^<]*)</textarea>', form):
        out[m[1]] = html.unescape(m[2])
    for m in re.finditer(r'<select name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option (?:value="([^"]*)" )?selected>([^<]*)</option>', m[2])
        first = re.search(r'<option (?:value="([^"]*)" )?[^>]*>([^<]*)</option>', m[2])
        pick = chosen or first
        assert pick is not None
        out[m[1]] = pick[1] or pick[2]
    for m in re.finditer(r'<input type="checkbox" name="([^"]+)"[^>]*checked>', form):
        out[m[1]] = "on"
    return out


def error_for(page: str, name: str) -> str:
    m = re.search(rf'data-error-for="{re.escape(name)}">([^<]*)<', page)
    assert m is not None, f"no error for {name}"
    return html.unescape(m[1])
