#!/usr/bin/env python3
"""Logs in through an OpenID Connect relying party without a browser (stdlib only).

    python3 bench/login.py http://localhost:4180/ [--user john --password password]

prints the Cookie header value that the relying party set (its session), or exits
non-zero with the step that failed. As a module: `login(url)` returns (cookie_header, steps).

The flow, as a browser would do it against the test provider (tests/idp/server.mjs):
GET the protected URL with `Accept: text/html` -> 302 to the provider -> redirects to
`/interaction/<uid>` -> the login form -> POST username/password -> the 303/302 chain back
to the relying party's redirect URI -> it sets its session cookie and redirects to the app.
The chain stops at the first redirect to the app after the callback (the app page itself
is not fetched), so only the login's own requests reach the relying party.

Cookies are kept per host name (ports ignored, as browsers do), path-matched; the
relying party runs on `localhost`, the provider on `127.0.0.1`, so they never mix.
"""

import email.utils
import http.client
import re
import sys
import time
import urllib.parse

ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
USER_AGENT = "portcullis-bench-login/1"


class LoginError(Exception):
    pass


class CookieJar:
    """host -> {(name, path): value}; enough for the provider and the relying parties."""

    def __init__(self):
        self.jar = {}

    def update(self, host, request_path, set_cookie_headers):
        for header in set_cookie_headers:
            parts = [p.strip() for p in header.split(";")]
            if "=" not in parts[0]:
                continue
            name, value = parts[0].split("=", 1)
            path = "/"
            expired = False
            for attr in parts[1:]:
                key, _, val = attr.partition("=")
                key = key.strip().lower()
                if key == "path" and val.startswith("/"):
                    path = val
                elif key == "max-age":
                    try:
                        expired = int(val) <= 0
                    except ValueError:
                        pass
                elif key == "expires":
                    try:
                        expired = email.utils.parsedate_to_datetime(val.strip()).timestamp() < time.time()
                    except (TypeError, ValueError):
                        pass
            cookies = self.jar.setdefault(host, {})
            if expired or value == "":
                cookies.pop((name, path), None)
            else:
                cookies[(name, path)] = value

    def header(self, host, path):
        cookies = self.jar.get(host, {})
        pairs = [
            f"{name}={value}"
            for (name, cpath), value in sorted(cookies.items(), key=lambda kv: -len(kv[0][1]))
            if path == cpath or path.startswith(cpath.rstrip("/") + "/") or cpath == "/"
        ]
        return "; ".join(pairs)

    def all_for(self, host):
        return "; ".join(f"{name}={value}" for (name, _path), value in self.jar.get(host, {}).items())


def connect_host(host):
    # `localhost` may resolve to ::1 first while the servers listen on 127.0.0.1 only.
    return "127.0.0.1" if host == "localhost" else host


def request(jar, method, url, body=None, headers=None, timeout=30):
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    port = parts.port or 80
    path = parts.path or "/"
    target = path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(connect_host(host), port, timeout=timeout)
    hdrs = {
        "Host": parts.netloc,
        "User-Agent": USER_AGENT,
        "Accept": ACCEPT_HTML,
        "Accept-Encoding": "identity",
    }
    if headers:
        hdrs.update(headers)
    cookie = jar.header(host, path)
    if cookie:
        hdrs["Cookie"] = cookie
    try:
        conn.request(method, target, body=body, headers=hdrs)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    jar.update(host, path, response.headers.get_all("Set-Cookie") or [])
    return response.status, response.headers, data


def login(url, user="john", password="password", max_steps=20):
    """Logs in at the relying party protecting `url`; returns (cookie header, steps taken)."""
    jar = CookieJar()
    rp_host = urllib.parse.urlsplit(url).hostname
    current = url
    method, body, extra = "GET", None, None
    left_rp = False
    steps = []
    for _ in range(max_steps):
        status, headers, data = request(jar, method, current, body, extra)
        steps.append(f"{method} {current.split('?')[0]} -> {status}")
        host = urllib.parse.urlsplit(current).hostname
        if host != rp_host:
            left_rp = True
        if status in (301, 302, 303, 307, 308):
            location = urllib.parse.urljoin(current, headers["Location"])
            if left_rp and host == rp_host:
                # The callback answered: the session is set; do not fetch the app page.
                cookie = jar.all_for(rp_host)
                if not cookie:
                    raise LoginError("the callback set no cookie: " + " | ".join(steps))
                return cookie, steps
            current = location
            method, body, extra = "GET", None, None
            continue
        if status == 200 and b'action="/interaction/' in data and b'name="username"' in data:
            match = re.search(rb'<form method="post" action="(/interaction/[^"]+/login)"', data)
            if not match:
                raise LoginError("login form without an action: " + " | ".join(steps))
            current = urllib.parse.urljoin(current, match.group(1).decode())
            method = "POST"
            body = urllib.parse.urlencode({"username": user, "password": password})
            extra = {"Content-Type": "application/x-www-form-urlencoded"}
            continue
        snippet = data[:300].decode("utf-8", "replace")
        raise LoginError(f"unexpected {status} at {current}: {snippet!r}; steps: " + " | ".join(steps))
    raise LoginError("too many steps: " + " | ".join(steps))


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--user", default="john")
    parser.add_argument("--password", default="password")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        cookie, steps = login(args.url, args.user, args.password)
    except (LoginError, OSError) as error:
        print(f"login failed: {error}", file=sys.stderr)
        return 1
    if args.verbose:
        for step in steps:
            print(step, file=sys.stderr)
    print(cookie)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
