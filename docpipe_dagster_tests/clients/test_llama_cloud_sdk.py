"""The official `llama-cloud` 2.x SDK, unchanged, against the LlamaParse mock's v2 routes.

If the mock drifted from what the SDK sends and validates (the configuration part, repeated
`expand` parameters, the `{"job": ...}` wrapper with `project_id`, the page arrays, the list
cursor, the error bodies), these fail. Sync and async clients.
"""

from __future__ import annotations

import asyncio
import io

import httpx
import llama_cloud
import pytest

from docpipe_dagster.core.llamaparse_extensions import LLAMAPARSE_EXTENSIONS
from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf
from docpipe_dagster_tests.support import MockServer

PDF_PAGES = [
    "Tide tables\nHigh water at the harbour mouth comes fifty minutes later each day.",
    "Moorings\nEvery mooring chain is inspected for wear before the winter storms.",
    "Lights\nThe green light marks the starboard side of the channel entrance.",
]
HTML = (
    b"<html><head><title>t</title><style>p{}</style></head><body><h1>Harbour rules</h1>"
    b"<p>Speed limit <b>four knots</b> inside the breakwater.</p><ul><li>No anchoring</li>"
    b"<li>Keep the fairway clear</li></ul></body></html>"
)
# The official SDK speaks real HTTP to a mock process (the other client tests run in-process).
pytestmark = pytest.mark.over_the_wire


@pytest.fixture
def llamaparse_mock(llamaparse_wire: MockServer) -> MockServer:
    return llamaparse_wire


FAST = {"polling_interval": 0.05, "max_interval": 0.2, "timeout": 20.0}


def sync_client(mock: MockServer, key: str | None = None) -> llama_cloud.LlamaCloud:
    return llama_cloud.LlamaCloud(
        api_key=key or mock.api_key or "", base_url=mock.base_url, max_retries=2
    )


def async_client(mock: MockServer, key: str | None = None) -> llama_cloud.AsyncLlamaCloud:
    return llama_cloud.AsyncLlamaCloud(
        api_key=key or mock.api_key or "", base_url=mock.base_url, max_retries=2
    )


def test_sdk_parses_a_multi_page_pdf_and_an_html_page(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults([])
    client = sync_client(llamaparse_mock)
    result = client.parsing.parse(
        tier="cost_effective",
        version="latest",
        upload_file=("harbour.pdf", build_text_pdf(PDF_PAGES), "application/pdf"),
        expand=["markdown", "text"],
        **FAST,
    )
    assert result.job.status == "COMPLETED" and result.job.project_id
    assert result.markdown is not None and result.text is not None
    assert [p.page_number for p in result.markdown.pages] == [1, 2, 3]
    assert [p.markdown for p in result.markdown.pages] == PDF_PAGES  # type: ignore[union-attr]
    assert [p.text for p in result.text.pages] == PDF_PAGES

    page = client.parsing.parse(
        tier="fast",
        version="latest",
        upload_file=("rules.html", HTML, "text/html"),
        expand=["markdown", "markdown_full"],
        **FAST,
    )
    assert page.markdown is not None
    (only,) = page.markdown.pages
    assert only.success is True
    assert only.markdown == (  # type: ignore[union-attr]
        "# Harbour rules\n\nSpeed limit four knots inside the breakwater.\n\n"
        "- No anchoring\n- Keep the fairway clear"
    )
    assert page.markdown_full == only.markdown  # type: ignore[union-attr]
    by_route = llamaparse_mock.stats()["by_route"]
    assert by_route["POST /api/v2/parse/upload"] == 2 and "POST /api/parsing/upload" not in by_route


def test_sdk_lists_with_pagination(llamaparse_mock: MockServer) -> None:
    client = sync_client(llamaparse_mock)
    ids = set()
    for n in range(5):
        job = client.parsing.create(
            tier="fast", version="latest", upload_file=(f"n{n}.md", f"# Note {n}".encode())
        )
        ids.add(job.id)
    listed = list(client.parsing.list(page_size=2))  # the SDK follows next_page_token
    assert {j.id for j in listed} == ids and len(listed) == 5
    first = client.parsing.list(page_size=2)
    assert len(first.items) == 2 and first.has_next_page()


def test_sdk_sees_a_failed_file_as_its_own_error(llamaparse_mock: MockServer) -> None:
    client = sync_client(llamaparse_mock)
    with pytest.raises(llama_cloud.PollingError) as info:
        client.parsing.parse(
            tier="fast",
            version="latest",
            upload_file=("broken.pdf", b"%PDF-1.4 cut short", "application/pdf"),
            expand=["markdown"],
            **FAST,
        )
    assert "FAILED" in str(info.value) and "corrupted" in str(info.value)


def test_sdk_wrong_key_is_authentication_error(llamaparse_mock: MockServer) -> None:
    with pytest.raises(llama_cloud.AuthenticationError):
        sync_client(llamaparse_mock, key="llx-wrong").parsing.list()

    async def run() -> None:
        async with async_client(llamaparse_mock, key="llx-wrong") as client:
            await client.parsing.list()

    with pytest.raises(llama_cloud.AuthenticationError):
        asyncio.run(run())


def test_async_sdk_parses_lists_and_fails(llamaparse_mock: MockServer) -> None:
    async def run() -> None:
        async with async_client(llamaparse_mock) as client:
            result = await client.parsing.parse(
                tier="agentic",
                version="latest",
                upload_file=("harbour.pdf", build_text_pdf(PDF_PAGES[:2]), "application/pdf"),
                expand=["text"],
                **FAST,
            )
            assert result.text is not None
            assert [p.text for p in result.text.pages] == PDF_PAGES[:2]
            listed = [job async for job in client.parsing.list(page_size=1)]
            assert result.job.id in {j.id for j in listed}
            # The async SDK (2.19.0) logs a failed job instead of raising PollingError, and
            # returns it: the failure is the job's status and the service's message.
            failed = await client.parsing.parse(
                tier="fast",
                version="latest",
                upload_file=("broken.pdf", b"%PDF-1.4 cut short"),
                expand=["markdown"],
                **FAST,
            )
            assert failed.job.status == "FAILED" and failed.markdown is None
            assert "corrupted" in (failed.job.error_message or "")

    asyncio.run(run())


def test_sdk_retries_a_429_with_retry_after(llamaparse_mock: MockServer) -> None:
    llamaparse_mock.set_faults({"kind": "http_429", "count": 1, "retry_after": 0.1})
    job = sync_client(llamaparse_mock).parsing.create(
        tier="fast", version="latest", upload_file=("r.md", b"# Retried")
    )
    assert job.id and llamaparse_mock.stats()["faults"] == {"http_429": 1}


def _office_files() -> dict[str, tuple[bytes, str]]:
    """A DOCX, a PPTX and an XLSX written with the format libraries, with known text."""
    import docx
    import openpyxl
    import pptx

    out = io.BytesIO()
    document = docx.Document()
    document.add_heading("Census summary", 1)
    document.add_paragraph("Households grew fastest in the river counties.")
    document.save(out)
    files = {"census.docx": (out.getvalue(), _OOXML + "wordprocessingml.document")}

    out = io.BytesIO()
    deck = pptx.Presentation()
    for title in ("Roadmap", "Lighthouse launch"):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = f"{title} details"
    deck.save(out)
    files["roadmap.pptx"] = (out.getvalue(), _OOXML + "presentationml.presentation")

    out = io.BytesIO()
    book = openpyxl.Workbook()
    book.active.title = "Revenue"
    book.active.append(["quarter", "revenue"])
    book.active.append(["Q1", 1200])
    costs = book.create_sheet("Costs")
    costs.append(["quarter", "costs"])
    costs.append(["Q1", 800])
    book.save(out)
    files["revenue.xlsx"] = (out.getvalue(), _OOXML + "spreadsheetml.sheet")
    return files


_OOXML = "application/vnd.openxmlformats-officedocument."


def test_sdk_round_trips_office_documents(llamaparse_mock: MockServer) -> None:
    """The mock parses DOCX, PPTX and XLSX with the local backend: real text, a page per
    slide and per sheet, as the SDK reads them."""
    llamaparse_mock.set_faults([])
    client = sync_client(llamaparse_mock)
    pages: dict[str, list[str]] = {}
    for name, (data, media_type) in _office_files().items():
        result = client.parsing.parse(
            tier="cost_effective",
            version="latest",
            upload_file=(name, data, media_type),
            expand=["markdown"],
            **FAST,
        )
        assert result.job.status == "COMPLETED", (name, result.job.error_message)
        assert result.markdown is not None
        pages[name] = [p.markdown for p in result.markdown.pages]  # type: ignore[union-attr]
    (docx_page,) = pages["census.docx"]
    assert "# Census summary" in docx_page and "river counties" in docx_page
    assert len(pages["roadmap.pptx"]) == 2  # one page per slide
    assert "Roadmap" in pages["roadmap.pptx"][0] and "Lighthouse launch" in pages["roadmap.pptx"][1]
    assert len(pages["revenue.xlsx"]) == 2  # one page per sheet
    assert "1200" in pages["revenue.xlsx"][0] and "800" in pages["revenue.xlsx"][1]
    assert "| quarter |" in pages["revenue.xlsx"][0].replace("|quarter|", "| quarter |")


def test_sdk_sees_the_service_error_for_an_unsupported_type(llamaparse_mock: MockServer) -> None:
    """LlamaParse does not read .txt (it is not on the SDK's list): the job fails with
    UNSUPPORTED_FILE_TYPE, as on the real service; the mock advertises the SDK's list."""
    with pytest.raises(llama_cloud.PollingError) as info:
        sync_client(llamaparse_mock).parsing.parse(
            tier="fast",
            version="latest",
            upload_file=("notes.txt", b"plain"),
            expand=["markdown"],
            **FAST,
        )
    assert "Unsupported file type: .txt" in str(info.value)
    advertised = httpx.get(
        f"{llamaparse_mock.base_url}/api/parsing/supported_file_extensions",
        headers={"Authorization": f"Bearer {llamaparse_mock.api_key}"},
    ).json()
    assert set(advertised) == LLAMAPARSE_EXTENSIONS
