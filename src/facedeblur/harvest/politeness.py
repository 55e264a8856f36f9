"""Politeness: robots.txt for the user agent `facedeblur-harvester` (Disallow, Allow, Crawl-delay), and one
request at a time per host, a delay apart.

robots.txt is read with urllib.robotparser. Two gaps of that parser are filled here: it drops a fractional
Crawl-delay (`0.5`), so delays are handed to it in milliseconds; and it answers "no" for every URL when the
file could not be read, so the RFC 9309 rules are applied here instead: a 4xx robots.txt means no rules, a
5xx or a network failure means stay away from the whole host.
"""
from __future__ import annotations

import re
import time
import urllib.robotparser
from contextlib import contextmanager
from urllib.parse import quote, unquote, urlsplit

from .settings import USER_AGENT

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309: a crawler may stop reading robots.txt after 500 KiB
# Longer rules are cut to this length (and lose a final '$'): a shorter Disallow blocks more, the safe side.
# Real rules are paths, far shorter; the cap bounds the work per URL a hostile robots.txt can ask for.
MAX_RULE_LENGTH = 512
_CRAWL_DELAY = re.compile(r"^(\s*crawl-delay\s*:\s*)([0-9]*\.?[0-9]+)(.*)$", re.IGNORECASE)


def origin(url: str) -> str:
    """scheme://host[:port], lower case: robots.txt applies per origin."""
    return f"{urlsplit(url).scheme.lower()}://{host_key(url)}"


def host_key(url: str) -> str:
    """host[:port], the unit of 'one request at a time' and of --per-site."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # out of range or not a number: refused by fetch.refuse_unsafe_url, keyed as written
        return parts.netloc.lower()
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host  # IPv6 literal, written as in a URL
    return f"{host}{f':{port}' if port else ''}"


class SiteRules:
    """robots.txt of one origin, as it applies to facedeblur-harvester."""

    def __init__(self, text: str | None, allow_all: bool = False, deny_all: bool = False):
        self.allow_all = allow_all
        self.deny_all = deny_all
        self.parser = urllib.robotparser.RobotFileParser()
        lines = (text or "").splitlines()
        self.parser.parse([_CRAWL_DELAY.sub(lambda m: f"{m[1]}{round(float(m[2]) * 1000)}{m[3]}", line)
                           for line in lines])

    def allowed(self, url: str) -> bool:
        if self.deny_all:
            return False
        if self.allow_all:
            return True
        if not self.parser.can_fetch(USER_AGENT, url):
            return False
        # robotparser matches '*' and '$' literally; the wildcard rules (RFC 9309) are checked here. An Allow
        # cannot override them: when in doubt, stay out.
        parts = urlsplit(url)
        target = quote(unquote(parts.path or "/")) + (f"?{parts.query}" if parts.query else "")
        return not any(wildcard_match(path, target) for path in self.disallowed_paths()
                       if "*" in path or path.endswith("$"))

    @property
    def crawl_delay(self) -> float:
        if self.allow_all or self.deny_all:
            return 0.0
        milliseconds = self.parser.crawl_delay(USER_AGENT)
        return float(milliseconds) / 1000 if milliseconds else 0.0

    def disallowed_paths(self) -> list[str]:
        """The Disallow paths of the group that applies to us, for the browser's URL block list. Allow
        exceptions are ignored there: blocking a little more than robots.txt asks is the safe side."""
        if self.deny_all:
            return ["/"]
        if self.allow_all:
            return []
        # robotparser keeps its groups in `entries` and `default_entry` (no public accessor); it picks the
        # first group naming our agent, else the `*` group, and so does this.
        group = next((entry for entry in self.parser.entries if entry.applies_to(USER_AGENT)),
                     self.parser.default_entry)
        if group is None:
            return []
        # robotparser stores paths percent-encoded; the wildcard characters are put back.
        paths = [line.path.replace("%2A", "*") for line in group.rulelines if not line.allowance and line.path]
        return [normalised_rule(path[:-3] + "$" if path.endswith("%24") else path) for path in paths]


def normalised_rule(path: str) -> str:
    """A robots.txt path with runs of '*' collapsed to one, cut to MAX_RULE_LENGTH."""
    path = re.sub(r"\*{2,}", "*", path)
    if len(path) > MAX_RULE_LENGTH:
        path = path[:MAX_RULE_LENGTH].rstrip("$")
    return path


def wildcard_match(rule: str, target: str) -> bool:
    """Does an RFC 9309 rule ('*' any characters, a final '$' the end) match the start of `target`?

    A regular expression of the rule ('.*' per '*') backtracks: `/*a*a*a*a*a*a*a*a*b` took minutes on one
    60-character path. These patterns need no backtracking: the first piece is a prefix, each later piece is
    taken at its leftmost place after the one before (leftmost leaves the most room for the rest), and with
    '$' the last piece must end the target. Each piece is one str.find, so the time is linear in the rule
    and the target, not exponential.
    """
    anchored = rule.endswith("$")
    pieces = (rule[:-1] if anchored else rule).split("*")
    first, middle = pieces[0], pieces[1:]
    if not target.startswith(first):
        return False
    position = len(first)
    if not middle:
        return not anchored or position == len(target)
    last = middle.pop() if anchored else None
    for piece in middle:
        found = target.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    if last is None:
        return True
    return len(target) - len(last) >= position and target.endswith(last)


class HostPacer:
    """One request at a time per host, and at least `delay` seconds from the end of one to the start of the
    next. The harvester is single-threaded, so 'one at a time' holds by construction; the pacer adds the gap."""

    def __init__(self):
        self._finished: dict[str, float] = {}

    @contextmanager
    def turn(self, host: str, delay: float):
        last = self._finished.get(host)
        if last is not None:
            wait = last + delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            yield
        finally:
            self._finished[host] = time.monotonic()
