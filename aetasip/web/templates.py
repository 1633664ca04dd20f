"""
The self-care portal's pages: Jinja2 templates with autoescape on, so a
display name or an e-mail address is never taken for HTML.
"""

from __future__ import annotations

from typing import Any

import jinja2

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %} · aetasip</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 1rem auto; padding: 0 1rem; line-height: 1.4; }
header { display: flex; justify-content: space-between; align-items: center; border-bottom: 1px solid #ccc; }
form.inline { display: inline; }
fieldset { margin: 1rem 0; border: 1px solid #ccc; }
label { display: block; margin: .5rem 0 .2rem; }
input[type=text], input[type=password], input[type=email] { width: 100%; max-width: 24rem; padding: .3rem; }
button { margin-top: .7rem; padding: .3rem .8rem; }
.error { color: #a00; font-weight: bold; }
.done { color: #060; font-weight: bold; }
dt { font-weight: bold; }
table { border-collapse: collapse; width: 100%; } td, th { border: 1px solid #ccc; padding: .2rem; text-align: left; word-break: break-all; }
</style>
</head>
<body>
<header>
<h1>{{ self.title() }}</h1>
{% if session %}
<form class="inline" method="post" action="/portal/logout">
<input type="hidden" name="csrf" value="{{ session.csrf }}">
<button type="submit" id="logout">Log out</button>
</form>
{% endif %}
</header>
{% if session %}
<nav><a href="/portal/">Subscriber data</a> · <a href="/portal/locations">Location records</a></nav>
{% endif %}
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
{% if done %}<p class="done" id="done">{{ done }}</p>{% endif %}
{% block content %}{% endblock %}
</body>
</html>
"""

_LOGIN = """{% extends "base.html" %}
{% block title %}Log in{% endblock %}
{% block content %}
<p>Log in with your number and your portal password (not the SIP password of your codec).</p>
<form method="post" action="/portal/login">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label for="number">Number</label>
<input type="text" id="number" name="number" value="{{ number }}" inputmode="numeric" autocomplete="username" required>
<label for="password">Portal password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="login">Log in</button>
</form>
{% endblock %}
"""

_SUBSCRIBER = """{% extends "base.html" %}
{% block title %}Subscriber data{% endblock %}
{% block content %}
<dl>
<dt>Number</dt><dd id="number">{{ account.number }}</dd>
<dt>Name</dt><dd id="name">{{ account.displayName or "—" }}</dd>
<dt>E-mail address</dt><dd id="email">{{ account.email or "—" }}</dd>
{% if account.group %}<dt>Group</dt><dd>{{ account.group }}</dd>{% endif %}
</dl>

<form method="post" action="/portal/sip-password">
<fieldset>
<legend>SIP password (the one your codec registers with)</legend>
<p>At least {{ minLength }} characters, with letters and digits, not containing your number.
It applies at once: enter it in your codec, whose next registration with the old one is refused.</p>
<input type="hidden" name="csrf" value="{{ session.csrf }}">
<label for="sip-password">New SIP password</label>
<input type="password" id="sip-password" name="password" autocomplete="new-password" required>
<label for="sip-confirm">New SIP password again</label>
<input type="password" id="sip-confirm" name="confirm" autocomplete="new-password" required>
<button type="submit" id="change-sip-password">Change the SIP password</button>
</fieldset>
</form>

<form method="post" action="/portal/email">
<fieldset>
<legend>E-mail address</legend>
<input type="hidden" name="csrf" value="{{ session.csrf }}">
<label for="new-email">E-mail address</label>
<input type="email" id="new-email" name="email" value="{{ account.email }}" autocomplete="email">
<button type="submit" id="change-email">Change the e-mail address</button>
</fieldset>
</form>

<form method="post" action="/portal/portal-password">
<fieldset>
<legend>Portal password</legend>
<input type="hidden" name="csrf" value="{{ session.csrf }}">
<label for="current">Current portal password</label>
<input type="password" id="current" name="current" autocomplete="current-password" required>
<label for="portal-password">New portal password</label>
<input type="password" id="portal-password" name="password" autocomplete="new-password" required>
<label for="portal-confirm">New portal password again</label>
<input type="password" id="portal-confirm" name="confirm" autocomplete="new-password" required>
<button type="submit" id="change-portal-password">Change the portal password</button>
</fieldset>
</form>
{% endblock %}
"""

_LOCATIONS = """{% extends "base.html" %}
{% block title %}Location records{% endblock %}
{% block content %}
{% if bindings %}
<p>Where your number {{ number }} is registered now, as the service sees it.</p>
<table id="bindings">
<thead><tr><th>Contact</th><th>From</th><th>User agent</th><th>Registered since</th><th>Expires in</th></tr></thead>
<tbody>
{% for b in bindings %}
<tr>
<td class="contact">{{ b.contact }}</td>
<td class="source">{{ b.source }} ({{ b.transport }})</td>
<td class="agent">{{ b.userAgent or "—" }}</td>
<td class="since">{{ b.since }}</td>
<td class="expires">{{ b.expiresIn }} s</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p id="none">Your number {{ number }} is not registered now: no codec can be called on it.</p>
{% endif %}
{% endblock %}
"""

environment = jinja2.Environment(
    loader=jinja2.DictLoader(
        {"base.html": _BASE, "login.html": _LOGIN, "subscriber.html": _SUBSCRIBER, "locations.html": _LOCATIONS}
    ),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def render(name: str, **values: Any) -> bytes:
    """The page C{name}, filled with C{values} (escaped)."""
    values.setdefault("session", None)
    values.setdefault("error", None)
    values.setdefault("done", None)
    return environment.get_template(name).render(**values).encode()
