"""The HTTP side: aiohttp app factory, auth middleware, JSON API, pages."""
