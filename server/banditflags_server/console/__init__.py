"""The web console for people at ``/console/``: sign in with an admin key, list flags, inspect one
(estimates, charts, history, audit log), and kill, freeze, throttle or create flags, each confirmed and
audited. Server-rendered Jinja2 templates and SVG charts, one small script; every change goes through
the same ``service`` functions as the HTTP API, and reuses the API's request helpers.
"""
