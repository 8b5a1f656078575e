"""``medlens serve``: trained bundles behind an HTTP API (FastAPI on uvicorn) and a web page.

:mod:`~medlens.serve.app` (endpoints, token, limits, errors), :mod:`~medlens.serve.models` (the one adapter
to bundles), :mod:`~medlens.serve.uploads` (safe upload handling), :mod:`~medlens.serve.batching`
(dynamic batching), :mod:`~medlens.serve.images` (pictures and arrays for the client) and ``static/`` (the
page: plain HTML, CSS and JavaScript shipped with the package).
"""
