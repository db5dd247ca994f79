"""The HTTP surface: the app, its routers (API, live feed, health), auth and request limits."""
