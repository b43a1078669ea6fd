"""Pictures and files in the room page (protocol 7.3), in real headless Chromium with real files.

Alice attaches by button, by a dropped file and by a pasted one; Bob sees the
thumbnails at their final size, opens the viewer and leaves it with the
keyboard; refusals say why and offer Retry when it can help.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chat import services
from tests.browser.conftest import SCREENSHOTS, Browsers
from tests.browser.test_room_page import expect, open_room, wait_for_bodies

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FILE_INPUT = "input.chat-composer__file"
# The live message's shape: every element's tag and class, and the thumbnails' boxes.
STRUCTURE = """li => [li.tagName, ...[...li.querySelectorAll('*')]
    .map(e => `${e.tagName}.${e.getAttribute('class')}.${e.getAttribute('width')}x${e.getAttribute('height')}`)]"""


def phone_photo(path: Path) -> Path:
    """A 4032x3024 JPEG as a phone stores a portrait photo: EXIF orientation 6 (turn 90 degrees) and a GPS position."""
    image = Image.radial_gradient("L").resize((4032, 3024)).convert("RGB")
    image.paste((200, 40, 40), (0, 0, 600, 600))  # a red corner, to see the orientation in the screenshot
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    image.save(path, "JPEG", quality=85, exif=exif)
    return path


def png(path: Path) -> Path:
    Image.linear_gradient("L").resize((800, 300)).convert("RGB").save(path, "PNG")
    return path


def pdf(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buffer, "PDF")
    path.write_bytes(buffer.getvalue())
    return path


def drop_file(page: Any, name: str, mime: str, data: bytes) -> None:
    """A synthetic drop of one file on the conversation, with a DataTransfer made in the page."""
    page.evaluate(
        """([name, mime, bytes]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            const target = document.querySelector('.chat');
            target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
            target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        [name, mime, list(data)],
    )


def paste_file(page: Any, name: str, mime: str, data: bytes) -> None:
    """A synthetic paste of one file into the message box."""
    page.evaluate(
        """([name, mime, bytes]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            document.querySelector('#kaiwa-composer').dispatchEvent(
                new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
        }""",
        [name, mime, list(data)],
    )


def test_pictures_by_button_files_by_drop_and_paste_and_the_viewer(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any, tmp_path: Path
) -> None:
    """A phone photo and a PNG chosen with the Attach button go in one message with an empty body; Bob sees
    thumbnails in the photo's turned orientation at their final box (the served picture upright, without EXIF
    or GPS), the viewer steps with the arrows, closes with Escape and gives focus back; a dropped PDF and a
    pasted text file show name, size and a download link; after a reload the server draws the same structure
    as the live message."""
    alice = make_user("alice")
    make_user("bob")
    services.room_create(name="General", slug="general", creator=alice)
    server = start_server(env={"MEDIA_ROOT": str(tmp_path / "media")})
    photo = phone_photo(tmp_path / "IMG_0001.jpg")
    picture = png(tmp_path / "chart.png")
    a = open_room(browsers, login, server, "alice", "general")
    b = open_room(browsers, login, server, "bob", "general")

    a.set_input_files(FILE_INPUT, [str(photo), str(picture)])
    expect(a.locator(".upload--done")).to_have_count(2, timeout=30_000)
    a.press("#kaiwa-composer", "Enter")
    wait_for_bodies(b, [""], timeout=30_000)
    thumbs = b.locator(".chat__list li.msg .att--image")
    expect(thumbs).to_have_count(2)
    expect(a.locator(".uploads")).to_be_hidden()
    # Orientation applied: the stored 4032x3024 photo is a 3024x4032 portrait; its box is known before loading.
    expect(thumbs.nth(0)).to_have_attribute("data-width", "3024")
    expect(thumbs.nth(0)).to_have_attribute("data-height", "4032")
    img = thumbs.nth(0).locator("img")
    expect(img).to_have_attribute("height", "320")
    expect(img).to_have_attribute("width", "240")
    b.wait_for_function("() => [...document.querySelectorAll('.att__thumb')].every(i => i.naturalWidth > 0)")
    box = img.bounding_box()
    assert box is not None and (round(box["width"]), round(box["height"])) == (240, 320)
    # What Bob can download is the upright picture without the phone's metadata (no GPS position).
    served = Image.open(io.BytesIO(b.request.get(f"{server.http}{thumbs.nth(0).get_attribute('href')}").body()))
    assert served.size == (3024, 4032)
    assert 0x8825 not in served.getexif() and 0x0112 not in served.getexif()
    live = b.locator(".chat__list li.msg").first.evaluate(STRUCTURE)
    b.screenshot(path=str(SCREENSHOTS / "attachments-message.png"))

    # The viewer: arrows between the message's pictures, Escape closes, focus returns to the thumbnail.
    thumbs.nth(0).click()
    dialog = b.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(b.locator(".viewer__caption")).to_have_text("IMG_0001.jpg (1 of 2)")
    expect(b.locator(".viewer__image")).to_have_attribute("src", thumbs.nth(0).get_attribute("href") or "")
    b.wait_for_function("() => document.querySelector('.viewer__image').complete")
    b.screenshot(path=str(SCREENSHOTS / "attachments-viewer.png"))
    b.keyboard.press("ArrowRight")
    expect(b.locator(".viewer__caption")).to_have_text("chart.png (2 of 2)")
    b.keyboard.press("ArrowLeft")
    expect(b.locator(".viewer__caption")).to_have_text("IMG_0001.jpg (1 of 2)")
    for _ in range(6):
        b.keyboard.press("Tab")
        assert b.evaluate("() => document.activeElement.closest('dialog') !== null"), "focus left the viewer"
    b.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert b.evaluate("() => document.activeElement === document.querySelector('.att--image')")

    # Files by drop and by paste: name, size and a download link.
    drop_file(a, "minutes.pdf", "application/pdf", pdf(tmp_path / "minutes.pdf").read_bytes())
    paste_file(a, "notes.txt", "text/plain", b"first line\nsecond line\n")
    expect(a.locator(".upload--done")).to_have_count(2, timeout=30_000)
    a.fill("#kaiwa-composer", "the documents")
    a.press("#kaiwa-composer", "Enter")
    wait_for_bodies(b, ["", "the documents"], timeout=30_000)
    files = b.locator(".chat__list li.msg").nth(1).locator(".att--file")
    expect(files).to_have_count(2)
    expect(files.nth(0).locator(".att__name")).to_have_text("minutes.pdf")
    expect(files.nth(1).locator(".att__name")).to_have_text("notes.txt")
    expect(files.nth(1).locator(".att__size")).to_have_text("23 B")
    href = files.nth(0).locator("a").get_attribute("href")
    assert href and href.startswith("/api/attachments/")
    assert b.request.get(f"{server.http}{href}").headers["content-type"] == "application/pdf"
    b.screenshot(path=str(SCREENSHOTS / "attachments-files.png"))

    # The server renders the same structure for a stored message.
    b.reload()
    wait_for_bodies(b, ["", "the documents"], timeout=30_000)
    assert b.locator(".chat__list li.msg").first.evaluate(STRUCTURE) == live


def test_refused_uploads_say_why_and_retry_or_cancel(
    browsers: Browsers, login: Any, start_server: Any, make_user: Any, tmp_path: Path
) -> None:
    """With KAIWA_MAX_UPLOAD_BYTES lowered, a file over it says it is too large and offers no Retry; a file of a
    refused type says so; an upload the server could not store (503) offers Retry, which then succeeds; Cancel
    stops an upload in flight and takes it out of the tray; the tray shows only the open room's uploads."""
    alice = make_user("alice")
    services.room_create(name="General", slug="general", creator=alice)
    services.room_create(name="Random", slug="random", creator=alice)
    server = start_server(env={"MEDIA_ROOT": str(tmp_path / "media"), "KAIWA_MAX_UPLOAD_BYTES": "200000"})
    a = open_room(browsers, login, server, "alice", "general")
    big = tmp_path / "video.jpg"
    big.write_bytes(b"\xff\xd8\xff" + bytes(300_000))
    odd = tmp_path / "archive.zip"
    odd.write_bytes(b"PK\x03\x04" + bytes(100))
    a.set_input_files(FILE_INPUT, [str(big), str(odd)])
    failed = a.locator(".upload--failed")
    expect(failed).to_have_count(2, timeout=30_000)
    expect(failed.nth(0).locator(".upload__error")).to_contain_text("too large")
    expect(failed.nth(1).locator(".upload__error")).to_contain_text("cannot be shared")
    expect(failed.locator(".upload__retry")).to_have_count(0)

    # The server's 503 (storage unreachable) once: Retry sends the file again.
    answers: list[str] = []

    def once_unavailable(route: Any) -> None:
        if not answers:
            answers.append("503")
            route.fulfill(
                status=503,
                content_type="application/json",
                body='{"error": {"code": "unavailable", "message": "Storage is unreachable; try again."}}',
            )
        else:
            answers.append("through")
            route.continue_()

    a.route("**/api/rooms/general/attachments", once_unavailable)
    a.set_input_files(FILE_INPUT, [str(png(tmp_path / "chart.png"))])
    expect(failed).to_have_count(3)
    expect(failed.nth(2).locator(".upload__error")).to_contain_text("cannot store files right now")
    a.screenshot(path=str(SCREENSHOTS / "attachments-refused.png"))
    a.get_by_role("button", name="Retry the upload of chart.png").click()
    expect(a.locator(".upload--done")).to_have_count(1, timeout=30_000)
    assert answers == ["503", "through"]
    a.unroute("**/api/rooms/general/attachments")

    # Cancel: an upload held by the network is stopped and leaves the tray.
    held: list[Any] = []
    a.route("**/api/rooms/general/attachments", lambda route: held.append(route))
    a.set_input_files(FILE_INPUT, [str(tmp_path / "chart.png")])
    expect(a.locator(".upload--uploading")).to_have_count(1)
    a.get_by_role("button", name="Cancel the upload of chart.png").click()
    expect(a.locator(".upload--uploading, .upload--queued")).to_have_count(0)
    expect(a.locator(".upload")).to_have_count(3)  # the two refused and the retried one
    a.unroute("**/api/rooms/general/attachments")

    # Uploads belong to their room: another room's composer does not show (or send) them.
    a.get_by_role("navigation", name="Your rooms").get_by_role("link", name="Random").click()
    expect(a.locator("#room")).to_have_attribute("data-room", "random")
    expect(a.locator(".uploads")).to_be_hidden()
    a.go_back()
    expect(a.locator("#room")).to_have_attribute("data-room", "general")
    expect(a.locator(".upload:visible")).to_have_count(3)
