"""The web console for people at ``/console/``: sign in with an admin key, list flags, inspect one
(estimates, charts, history, audit log), and kill, freeze, throttle or create flags, edit a flag's
targets and rules and the segments they name, each confirmed or checked, and audited. Server-rendered
Jinja2 templates and SVG charts, one small script; every change goes through the same ``service``
functions as the HTTP API, and reuses the API's request helpers.

=================  =================================================================================
``routes``         the route table that ``app.py`` mounts (with ``is_console`` and ``error_page``)
``auth``           sign-in and sign-out, and ``authed``: a live session, and CSRF on every POST
``flag_pages``     the flags list and a flag's page
``forms``          the changes: kill/freeze/throttle/policy on a flag, and the new-flag form
``targeting``      a flag's targets and rules editor (``rules_view``: what the flag page shows of them)
``segment_pages``  the segments list, the new-segment form, a segment's page (edit, delete)
``clause_form``    the editors' indexed fields: drafts, values per operator, buttons, errors by field
``templating``     templates and their filters, security headers, redirects, the error page
``sessions``       sessions in the database; ``charts``: the SVG charts
=================  =================================================================================
"""
