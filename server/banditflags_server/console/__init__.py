"""The web console for people at ``/console/``: sign in with an admin key, list flags, inspect one
(estimates, charts, history, audit log), and kill, freeze, throttle or create flags, each confirmed and
audited. Server-rendered Jinja2 templates and SVG charts, one small script; every change goes through
the same ``service`` functions as the HTTP API, and reuses the API's request helpers.

=================  =================================================================================
``routes``         the route table that ``app.py`` mounts (with ``is_console`` and ``error_page``)
``auth``           sign-in and sign-out, and ``authed``: a live session, and CSRF on every POST
``flag_pages``     the flags list and a flag's page
``forms``          the changes: kill/freeze/throttle/policy on a flag, and the new-flag form
``templating``     templates and their filters, security headers, redirects, the error page
``sessions``       sessions in the database; ``charts``: the SVG charts
=================  =================================================================================
"""
