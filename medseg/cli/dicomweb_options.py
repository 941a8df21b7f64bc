"""Options shared by the commands that read a PACS over DICOMweb (``medseg predict``,
``medseg import-dicom``, ``medseg view``): one spelling and one help text for each, and one
place where the connection is put together (credentials from the environment or
``~/.netrc``, never from the command line)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

STUDY = typer.Option(None, "--study", help="PACS: the StudyInstanceUID.")
QUERY = typer.Option(
    None, "--query", help='PACS: QIDO-RS search, e.g. "ModalitiesInStudy=MR&StudyDate=20260101-".'
)
LIMIT = typer.Option(
    None, "--limit", help="PACS: allow a --query to match up to N studies (default 10)."
)
ALL_STUDIES = typer.Option(False, "--all", help="PACS: every study --query matches.")
CA_BUNDLE = typer.Option(
    None, "--ca-bundle", help="PACS: PEM file of the CA that signed the server's certificate."
)
TIMEOUT = typer.Option(30.0, "--timeout", min=1, help="PACS: seconds per request.")
RETRIES = typer.Option(3, "--retries", min=0, help="PACS: retries with backoff.")


def connection(url: str, ca_bundle: Path | None, timeout: float, retries: int) -> dict[str, Any]:
    """The keyword arguments of a DICOMweb connection (``credentials``, ``ca_bundle``,
    ``timeout``, ``retries``) for ``url``, as the library functions take them."""
    from medseg.io.dicomweb import credentials_from

    return {
        "credentials": credentials_from(os.environ, url),
        "ca_bundle": ca_bundle,
        "timeout": timeout,
        "retries": retries,
    }
