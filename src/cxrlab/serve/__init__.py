"""The edges that answer over HTTP: the local web app and JSON API (``cxrlab serve``)."""
