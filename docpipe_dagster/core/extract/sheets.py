"""Spreadsheets, one page per sheet as a markdown table: XLSX (openpyxl, streamed) and XLS
(xlrd). The chunker repeats a table's header row in every chunk of a long sheet
(core/chunking.py), so each chunk still says which column is which.

XLSX sheets are read with openpyxl's read-only mode, which streams rows from the sheet XML
instead of building the whole workbook, and each row becomes one markdown line at once.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    LIMIT_EXCEEDED,
    PROTECTED_FILE,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.containers import ZIP_MAGIC, open_zip
from docpipe_dagster.core.extract.office import library_failure

# Cells read from one workbook; ~20x a 200,000-row x 10-column sheet.
MAX_CELLS = 50_000_000


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split()).replace("|", "\\|")


class _SheetWriter:
    """Builds one sheet's page row by row: a markdown table whose first row is the header."""

    def __init__(self, title: str, budget: list[int]) -> None:
        self.title = title
        self.md: list[str] = [f"# {title}", ""]
        self.text: list[str] = [title, ""]
        self.width = 0
        self.budget = budget  # shared cell count left for the workbook

    def add(self, values: Iterable[object]) -> None:
        cells = [_cell(v) for v in values]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            return
        self.budget[0] -= len(cells)
        if self.budget[0] < 0:
            raise ExtractionError(
                LIMIT_EXCEEDED, f"The workbook has more than {MAX_CELLS:,} non-empty cells."
            )
        self.md.append("| " + " | ".join(cells) + " |")
        self.text.append("\t".join(cells))
        if not self.width:
            self.width = len(cells)
            self.md.append("|" + "---|" * self.width)

    def page(self) -> ExtractedPage:
        return ExtractedPage(text="\n".join(self.text).strip(), md="\n".join(self.md).strip())


def extract_xlsx(data: bytes) -> list[ExtractedPage]:
    """An Excel workbook (.xlsx/.xlsm/.xltx), one page per worksheet; macros never run."""
    import openpyxl

    kind = "Excel workbook"
    open_zip(data, kind).close()
    budget = [MAX_CELLS]
    try:
        wb = openpyxl.load_workbook(
            io.BytesIO(data), read_only=True, data_only=True, keep_links=False
        )
    except ExtractionError:
        raise
    except Exception as exc:  # the library's errors on malformed input have no common base
        raise library_failure(kind, exc) from exc
    try:
        pages = []
        for ws in wb.worksheets:
            # The declared dimension would pad every row to the widest and fill every missing
            # row up to the last: two cells at A1 and XFD1048576 would be 17 billion. Without
            # it, only the rows and cells present are read.
            ws.reset_dimensions()
            writer = _SheetWriter(ws.title, budget)
            for row in ws.iter_rows(values_only=True):
                writer.add(row)
            pages.append(writer.page())
        return pages
    except ExtractionError:
        raise
    except Exception as exc:  # as above
        raise library_failure(kind, exc) from exc
    finally:
        wb.close()


def extract_xls(data: bytes) -> list[ExtractedPage]:
    """A legacy Excel 97-2003 workbook, one page per sheet."""
    if data.startswith(ZIP_MAGIC):  # an .xlsx saved under the old name: read it as one
        return extract_xlsx(data)
    import xlrd

    kind = "Excel 97-2003 workbook"
    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True)
    except xlrd.XLRDError as exc:
        if "encrypt" in str(exc).lower():
            raise ExtractionError(PROTECTED_FILE, f"The {kind} is password-protected.") from exc
        raise ExtractionError(
            CORRUPTED_FILE, f"The file is not a readable {kind} ({exc})."
        ) from exc
    except Exception as exc:  # the library's other errors on malformed input
        raise library_failure(kind, exc) from exc
    budget = [MAX_CELLS]
    try:
        pages = []
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            writer = _SheetWriter(sheet.name, budget)
            for r in range(sheet.nrows):
                writer.add(_xls_value(book, cell) for cell in sheet.row(r))
            book.unload_sheet(index)
            pages.append(writer.page())
        return pages
    except ExtractionError:
        raise
    except Exception as exc:  # as above
        raise library_failure(kind, exc) from exc
    finally:
        book.release_resources()


def _xls_value(book, cell) -> object:  # type: ignore[no-untyped-def]
    import xlrd

    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            return xlrd.xldate_as_datetime(cell.value, book.datemode)
        except (ValueError, OverflowError, xlrd.xldate.XLDateError):
            return cell.value
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return bool(cell.value)
    if cell.ctype in (xlrd.XL_CELL_ERROR, xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
        return None
    return cell.value
