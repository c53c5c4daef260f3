"""`keyreid serve`: the HTTP search service (FastAPI + uvicorn) and its web page."""

from keyreid.serve.app import ServeApp, ServeSettings, create_app
from keyreid.serve.service import SearchOptions, SearchService

__all__ = ["SearchOptions", "SearchService", "ServeApp", "ServeSettings", "create_app"]
