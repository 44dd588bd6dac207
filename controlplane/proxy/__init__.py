"""The console proxy: an ASGI app (Starlette) under gunicorn's asgi worker that serves the browser
faces' pages and WebSockets (VNC consoles, workspace terminals, pad rooms). See docs/consoles.md."""
