"""The browser console: server-rendered pages for practice staff, company admins and operators.

Pages call the same domain services as the JSON API, with the same roles and tenant scoping
(:class:`hub.auth.Principal`); a page holds no rule of its own. Every page works without
JavaScript; htmx (vendored under ``static/``) only makes filters feel instant.
"""
