"""Yahoo's session cookie and crumb, with the EU consent form as the fallback for the cookie.

Yahoo answers 401 to a quote request without its ``A3`` cookie and the crumb issued for it. The handshake
is yfinance's (yfinance/data.py, ``YfData``), in its order:

1. "basic": any answer from ``https://fc.yahoo.com`` (a 404 page) sets A3 for ``.yahoo.com``
   (``_get_cookie_basic``).
2. Where consent is required (the EU, the UK), that request is redirected to a consent page instead
   (``consent.yahoo.com`` / ``guce.yahoo.com``) and sets no A3. Then the consent form is accepted, as
   yfinance's "csrf" strategy and ``_accept_consent_form`` do: the form's hidden inputs (``csrfToken``,
   ``sessionId``, ``originalDoneUrl``, ``namespace``) are posted back with ``agree`` to the form's
   ``action`` (``https://consent.yahoo.com/v2/collectConsent?sessionId=...``), whose redirects lead through
   ``https://guce.yahoo.com/copyConsent?sessionId=...``, which sets the cookies; if the form was not
   reached through the redirect, it is fetched from ``consent_url`` (``https://guce.yahoo.com/consent``,
   when one is configured), and if the cookie is still missing after the post, ``copyConsent`` is asked
   for once more.
3. ``/v1/test/getcrumb`` with the cookie returns the crumb.

Every request of the handshake is paid for like a quote (the feed's limiter and hourly budget). The
consent page is read up to ``MAX_PAGE_BYTES`` and parsed with the standard library's HTML parser: only
forms and their inputs matter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from engine.feeds.yahoo_http import Answer

MAX_PAGE_BYTES = 512 * 1024  # a consent page is ~50-150 kB of HTML and scripts
MAX_CRUMB_LEN = 64  # crumbs are ~11 characters; anything long is a page, not a crumb
COOKIE = "A3"  # the session cookie crumbs are issued for (yfinance/data.py, _load_cookie_curlCffi)
ACCEPT_PAGE = "text/html,application/xhtml+xml,*/*;q=0.8"  # what a browser's first visit accepts
CONSENT_FIELDS = ("csrfToken", "sessionId")  # what makes a form Yahoo's consent form


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    agree: tuple[str, str] | None = None  # the "agree"/"accept" button or box: (name, value)


class _Forms(HTMLParser):
    """Every form of a page: action, method, the named inputs' values, and an agree/accept control."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._open = Form(a.get("action", ""), (a.get("method") or "get").lower())
            self.forms.append(self._open)
        elif tag in ("input", "button") and self._open is not None and a.get("name"):
            name, value, kind = a["name"], a.get("value", ""), (a.get("type") or "").lower()
            lowered = (name + " " + value).lower()
            if kind in ("checkbox", "radio", "submit") or tag == "button":
                if ("agree" in lowered or "accept" in lowered) and self._open.agree is None:
                    self._open.agree = (name, value or "agree")
            else:
                self._open.fields[name] = value

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def consent_form(page: bytes) -> Form | None:
    """Yahoo's consent form in ``page`` (the first form with the hidden csrfToken and sessionId)."""
    parser = _Forms()
    try:
        parser.feed(page.decode("utf-8", "replace"))
        parser.close()
    except (ValueError, AssertionError):  # HTMLParser's own complaints about broken markup
        pass
    return next((f for f in parser.forms if all(k in f.fields for k in CONSENT_FIELDS)), None)


# The feed's request, paid for: method, url, params, data, headers (Accept), body cap; None when it failed
# (reported already).
Params = dict[str, str] | None
Get = Callable[[str, str, Params, Params, str, int], Awaitable[Answer | None]]


class Handshake:
    """The cookie (basic, else the consent form) and the crumb. ``run`` returns the crumb, or why not."""

    def __init__(self, get: Get, has_cookie: Callable[[str], bool], cookie_url: str,
                 consent_url: str | None, crumb_url: str) -> None:
        self.get = get
        self.has_cookie = has_cookie
        self.cookie_url = cookie_url
        self.consent_url = consent_url
        self.crumb_url = crumb_url
        self.consents = 0  # consent forms accepted

    async def cookie(self) -> str | None:
        """Get A3; '' when done, else why not (None: a request failed and was reported)."""
        answer = await self.get("GET", self.cookie_url, None, None, ACCEPT_PAGE, MAX_PAGE_BYTES)
        if answer is None:
            return None
        if self.has_cookie(COOKIE):  # any status will do (fc.yahoo.com's is a 404)
            return ""
        form = consent_form(answer.body or b"")  # redirected to the consent page?
        if form is None and self.consent_url is None:
            return f"no cookie from {urlsplit(self.cookie_url).netloc} (HTTP {answer.status})"
        if form is None:
            assert self.consent_url is not None
            answer = await self.get("GET", self.consent_url, None, None, ACCEPT_PAGE, MAX_PAGE_BYTES)
            if answer is None:
                return None
            form = consent_form(answer.body or b"")
            if form is None:
                return (f"no cookie from {urlsplit(self.cookie_url).netloc} (HTTP {answer.status}) and no "
                        f"consent form at {urlsplit(self.consent_url).netloc}")
        return await self._consent(form, answer.url)

    async def _consent(self, form: Form, page_url: str) -> str | None:
        data = dict(form.fields)
        name, value = form.agree or ("agree", "agree")
        data[name] = value
        action = urljoin(page_url, form.action or page_url)
        answer = await self.get("POST", action, None, data, ACCEPT_PAGE, MAX_PAGE_BYTES)
        if answer is None:
            return None
        if not self.has_cookie(COOKIE):
            copy = urljoin(page_url, f"/copyConsent?sessionId={form.fields['sessionId']}")
            answer = await self.get("GET", copy, None, None, ACCEPT_PAGE, MAX_PAGE_BYTES)
            if answer is None:
                return None
        self.consents += 1
        if not self.has_cookie(COOKIE):
            return f"no cookie after accepting the consent form at {urlsplit(action).netloc}"
        return ""

    async def crumb(self, bad: Callable[[str, object], None]) -> tuple[Answer | None, str]:
        """The getcrumb answer and the crumb in it ('' when the answer holds none: counted by ``bad``)."""
        answer = await self.get("GET", self.crumb_url, None, None, "*/*", 64 * 1024)
        if answer is None or answer.status != 200 or answer.body is None:
            return answer, ""
        crumb = answer.body.decode("utf-8", "replace").strip()
        if not crumb or len(crumb) > MAX_CRUMB_LEN or any(c.isspace() or c in '<{"' for c in crumb):
            bad("empty crumb" if not crumb else "not a crumb", answer.body)
            return answer, ""
        return answer, crumb
