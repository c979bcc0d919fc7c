"""A provider's side of an export: request it, download the zip, open it, read its rows."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyzipper
from flask.testing import FlaskClient
from openpyxl import load_workbook
from werkzeug.test import TestResponse

from service.domain.passwords import export_password, today_utc
from service.exports.formats import COLUMNS
from service.shell.config import Config


def request_export(client: FlaskClient, headers: dict[str, str], **params: Any) -> TestResponse:
    """Ask /extractData for an export with these query parameters."""
    return client.get("/extractData", query_string=params, headers=headers)


def download(client: FlaskClient, url: str, **kwargs: Any) -> tuple[TestResponse, bytes]:
    """Follow a download link; return the response and its body."""
    response = client.get(url, **kwargs)
    return response, response.get_data()


def unzip(data: bytes, password: str) -> tuple[str, bytes]:
    """Open an export's zip, checking it is AES-256 and deflated; return its one file."""
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        (member,) = archive.infolist()
        assert member.wz_aes_strength == 3  # 256-bit WinZip AES
        assert member.compress_type == pyzipper.ZIP_DEFLATED
        archive.setpassword(password.encode())
        return member.filename, archive.read(member.filename)


def todays_password(config: Config) -> str:
    """Return the password that opens the zips exported today (UTC)."""
    return export_password(config.zip_password, today_utc()).password


def export_and_fetch(
    client: FlaskClient, headers: dict[str, str], config: Config, **params: Any
) -> tuple[dict, str, bytes]:
    """Request an export, download and open it; return the answer, file name and content."""
    response = request_export(client, headers, **params)
    assert response.status_code == 200, response.json
    reply, data = download(client, response.json["download_url"])
    assert reply.status_code == 200
    name, content = unzip(data, todays_password(config))
    return response.json, name, content


def csv_rows(content: bytes) -> list[dict[str, str]]:
    """Read an exported CSV file (UTF-8 with a BOM) as one dict per record."""
    assert content.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))


def xlsx_rows(content: bytes) -> list[dict[str, object]]:
    """Read an exported workbook as one dict per record, checking no cell is a formula."""
    sheet = load_workbook(io.BytesIO(content))["intakes"]
    rows = list(sheet.iter_rows())
    assert tuple(cell.value for cell in rows[0]) == COLUMNS
    for row in rows:
        assert all(cell.data_type != "f" for cell in row)
    return [{name: cell.value for name, cell in zip(COLUMNS, row, strict=True)} for row in rows[1:]]
