"""Reading documents and splitting them into chunks (no run context needed here).

Formats: plain text (``.txt``), Markdown (``.md``, ``.markdown``), reStructuredText
(``.rst``), HTML (``.html``, ``.htm``; text outside ``script``/``style``) and PDF (``.pdf``,
text of each page with pypdf, pages separated by a blank line).

The splitter follows LangChain's ``RecursiveCharacterTextSplitter``: cut at the coarsest
separator (blank line, line, sentence, word, character) that brings pieces under the
chunk size, then merge neighbouring pieces up to the size with some overlap. It works on
character offsets, so every chunk knows exactly where it sits in its document. With
``heading_aware`` it first cuts a Markdown or reStructuredText document into sections
at its headings, so a chunk never straddles two sections and carries its heading path.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

from flowbuilder.sdk import Chunk, Document, NodeError, content_hash

FORMATS = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", "")
Unit = Literal["characters", "tokens"]


# ---- loading -----------------------------------------------------------------------------


class _HTMLText(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "pre", "blockquote", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            level = int(tag[1])
            self.parts.append("\n\n" + "#" * level + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text of an HTML page (headings as Markdown ``#`` lines) and its title."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text, parser.title.strip()


def _pdf_text(path: Path, data: bytes) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        info: Any = reader.metadata or {}
        title = str(info.get("/Title") or "")
    except (PdfReadError, OSError, ValueError) as exc:
        raise NodeError(f"cannot read the PDF {path.name}: {exc}") from None
    return "\n\n".join(p for p in pages if p), title


_TITLE_HEADER = re.compile(r"^Title:\s*(.+)$", re.MULTILINE)


def guess_title(text: str, fmt: str, fallback: str) -> str:
    """A ``Title:`` header in the first lines (PEPs, e-mail style), else the first
    heading, else ``fallback``."""
    head = text[:2000]
    match = _TITLE_HEADER.search(head)
    if match:
        return match.group(1).strip()
    for section in sections(text, fmt):
        if section.heading:
            return section.heading.split(" > ")[0]
    return fallback


def load_document(path: Path, data: bytes | None = None) -> Document:
    """Read one file into a :class:`Document`; ``data`` is its bytes when the caller has
    read them already (through the file-access policy).

    Raises:
        NodeError: an unsupported extension, a text file that is not UTF-8, or a PDF
            pypdf cannot read.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        kinds = ", ".join(sorted(set(FORMATS)))
        raise NodeError(f"{path.name}: unsupported document type (supported: {kinds})")
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NodeError(f"cannot read {path}: {exc.strerror}") from None
    title = ""
    if fmt == "pdf":
        text, title = _pdf_text(path, data)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise NodeError(
                f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        text = text.replace("\r\n", "\n")
        if fmt == "html":
            text, title = html_to_text(text)
    stem = path.stem
    title = title or guess_title(text, "md" if fmt == "html" else fmt, stem)
    return Document(
        source=str(path.resolve()),
        name=path.name,
        title=title,
        format=fmt,
        text=text,
        content_hash=content_hash(data),
    )


def find_documents(path: Path, *, recursive: bool = True, pattern: str = "") -> list[Path]:
    """The supported files at ``path`` (a file, or a folder searched recursively), sorted.

    ``pattern`` is a glob on file names (``*.md``); empty means every supported type.
    Hidden files and folders are skipped.

    Raises:
        NodeError: the path does not exist.
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise NodeError(f"no such file or folder: {path}")
    found = []
    walker = path.rglob("*") if recursive else path.glob("*")
    for p in walker:
        rel = p.relative_to(path).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        if p.suffix.lower() not in FORMATS:
            continue
        if pattern and not p.match(pattern):
            continue
        found.append(p)
    return sorted(found)


# ---- sections (headings) -----------------------------------------------------------------

_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_RST_ADORN = re.compile(r"^([=\-~^\"'`#*+:.<>_])\1{2,}[ \t]*$")


class Section:
    """A run of a document's text under one heading path; ``start``/``end`` are offsets."""

    __slots__ = ("end", "heading", "start")

    def __init__(self, heading: str, start: int, end: int) -> None:
        self.heading, self.start, self.end = heading, start, end


def _md_headings(text: str) -> Iterator[tuple[int, int, str]]:
    in_fence = False
    pos = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence:
            m = _MD_HEADING.match(line.rstrip("\n"))
            if m:
                yield pos, len(m.group(1)), m.group(2).strip()
        pos += len(line)


def _rst_headings(text: str) -> Iterator[tuple[int, int, str]]:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    levels: list[tuple[str, bool]] = []  # adornment styles in order of first appearance
    i = 0
    while i < len(lines) - 1:
        title = lines[i].rstrip("\n")
        under = lines[i + 1].rstrip("\n")
        over = lines[i - 1].rstrip("\n") if i > 0 else ""
        m = _RST_ADORN.match(under)
        if (
            m
            and title.strip()
            and not _RST_ADORN.match(title)
            and len(under.rstrip()) >= len(title.rstrip())
            and not title.startswith((" ", "\t"))
        ):
            overlined = bool(_RST_ADORN.match(over)) and over.rstrip()[0] == m.group(1)
            style = (m.group(1), overlined)
            if style not in levels:
                levels.append(style)
            start = offsets[i - 1] if overlined else offsets[i]
            yield start, levels.index(style) + 1, title.strip()
            i += 2
            continue
        i += 1


def sections(text: str, fmt: str) -> list[Section]:
    """Cut ``text`` at its headings (Markdown ``#`` lines, reST underlined titles).

    Each section's heading is the path of headings above it, joined by " > ". Text
    before the first heading is a section with an empty heading. Other formats give one
    section.
    """
    if fmt == "md":
        found = list(_md_headings(text))
    elif fmt == "rst":
        found = list(_rst_headings(text))
    else:
        found = []
    if not found:
        return [Section("", 0, len(text))]
    out: list[Section] = []
    if found[0][0] > 0:
        out.append(Section("", 0, found[0][0]))
    stack: list[tuple[int, str]] = []
    for n, (start, level, title) in enumerate(found):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = found[n + 1][0] if n + 1 < len(found) else len(text)
        out.append(Section(" > ".join(t for _, t in stack), start, end))
    return out


# ---- splitting ---------------------------------------------------------------------------

LengthFn = Callable[[str], int]


def _pieces(
    text: str, start: int, end: int, size: int, length: LengthFn, seps: tuple[str, ...]
) -> list[tuple[int, int]]:
    """Contiguous spans covering ``[start, end)``, each at most ``size`` long where the
    separators allow (a separator stays at the end of the span before it)."""
    if length(text[start:end]) <= size:
        return [(start, end)]
    for n, sep in enumerate(seps):
        if sep == "":
            # cut by characters: the last resort, so a long word never blocks a split
            step = max(1, size if length is len else size * 3)
            return [(s, min(s + step, end)) for s in range(start, end, step)]
        if sep in text[start:end]:
            spans: list[tuple[int, int]] = []
            pos = start
            while pos < end:
                cut = text.find(sep, pos, end)
                stop = end if cut < 0 else cut + len(sep)
                spans.append((pos, stop))
                pos = stop
            out: list[tuple[int, int]] = []
            for s, e in spans:
                if length(text[s:e]) > size:
                    out.extend(_pieces(text, s, e, size, length, seps[n + 1 :]))
                else:
                    out.append((s, e))
            return out
    return [(start, end)]


def _merge(
    text: str, spans: list[tuple[int, int]], size: int, overlap: int, length: LengthFn
) -> list[tuple[int, int]]:
    chunks: list[tuple[int, int]] = []
    current: list[tuple[int, int]] = []
    total = 0
    for span in spans:
        n = length(text[span[0] : span[1]])
        if current and total + n > size:
            chunks.append((current[0][0], current[-1][1]))
            # keep trailing pieces (up to `overlap`) as the start of the next chunk
            while current and (total > overlap or total + n > size):
                total -= length(text[current[0][0] : current[0][1]])
                current.pop(0)
        current.append(span)
        total += n
    if current:
        chunks.append((current[0][0], current[-1][1]))
    return chunks


def token_length(tokenizer_file: Path) -> LengthFn:
    """A length function counting the tokens of a Hugging Face ``tokenizer.json``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count


def split_document(
    doc: Document,
    *,
    size: int = 1000,
    overlap: int = 100,
    heading_aware: bool = True,
    length: LengthFn = len,
) -> list[Chunk]:
    """Cut a document into chunks of at most ``size`` (characters, or whatever
    ``length`` counts) with about ``overlap`` shared between neighbours.

    Chunks keep the source, title, heading path and exact character offsets; leading
    and trailing whitespace is trimmed (offsets follow). A reST/Markdown heading line
    alone is not a chunk.

    Raises:
        NodeError: ``overlap`` not smaller than ``size``.
    """
    if size < 1 or overlap < 0 or overlap >= size:
        raise NodeError(
            f"chunk overlap ({overlap}) must be at least 0 and smaller than the chunk size ({size})"
        )
    text = doc.text
    parts = sections(text, doc.format) if heading_aware else [Section("", 0, len(text))]
    chunks: list[Chunk] = []
    for section in parts:
        spans = _pieces(text, section.start, section.end, size, length, SEPARATORS)
        for s, e in _merge(text, spans, size, overlap, length):
            piece = text[s:e]
            lead = len(piece) - len(piece.lstrip())
            s, e = s + lead, s + len(piece.rstrip())
            body = text[s:e]
            if not body or (section.heading and _only_heading(body, section.heading)):
                continue
            chunks.append(
                Chunk(
                    source=doc.source,
                    name=doc.name,
                    title=doc.title,
                    heading=section.heading,
                    text=body,
                    start=s,
                    end=e,
                    index=len(chunks),
                    content_hash=doc.content_hash,
                )
            )
    return chunks


def _only_heading(body: str, heading: str) -> bool:
    """Whether ``body`` is nothing but the heading lines of its section."""
    title = heading.rsplit(" > ", 1)[-1].strip()
    for line in body.splitlines():
        text = line.strip()
        if text and text != title and not _RST_ADORN.match(text) and not _MD_HEADING.match(text):
            return False
    return True
