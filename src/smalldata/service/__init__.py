"""`smalldata serve`: a web page and a REST API to upload examples, train, and predict."""

from smalldata.service.app import create_app

__all__ = ["create_app"]
