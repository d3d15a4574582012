"""The local web dashboard of `deltaflow dashboard`: an HTTP server on loopback (`server`), the
checks every request passes (`guard`), and the page's own scripts and styles (`static/`)."""
