"""File downloads the API and the pages both offer."""

from __future__ import annotations

from starlette.responses import Response


def csv_download(content: str, filename: str) -> Response:
    """A CSV the browser saves as `filename` instead of showing it."""
    return Response(
        content=content,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
