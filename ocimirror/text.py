"""Text from outside (a registry's error message, a tag or annotation in a shared store) made safe to print.

A terminal obeys what it is sent: ``ESC [2J`` clears the screen, ``ESC ]0;...BEL`` retitles the window, a
crafted sequence can hide or fake lines of output. So every string that may hold text from outside goes
through ``printable`` before a person's terminal or a log sees it: escape sequences are removed whole,
every other C0 and C1 control and DEL is removed (tabs and line breaks become one space: a message is one
line), and so are the Unicode bidirectional overrides that reorder what is displayed.
"""

from __future__ import annotations

import logging
import re
from contextlib import suppress

#: CSI (``ESC [`` ... final byte), OSC/DCS/APC/PM/SOS strings (up to BEL or ``ESC \``, within 256
#: characters; an unterminated one loses only its introducer, so the rest of the message stays readable),
#: and two-byte escapes; the 8-bit C1 forms (``\x9b`` CSI, ``\x9d`` OSC...) too.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]{0,256}(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -~]?"
)
_LINE_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
#: C0, DEL, C1, and the bidirectional embedding, override and isolate controls.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``str(text)`` without terminal escape sequences or control characters, on one line."""
    cleaned = _ESCAPE_SEQUENCE.sub("", str(text))
    cleaned = _LINE_BREAKS.sub(" ", cleaned)
    return _CONTROLS.sub("", cleaned)


def printable_log_records() -> None:
    """Make every log record created from now on carry a ``printable`` message (and no arguments left to
    format), whichever logger or handler it goes to. For programs that print logs to a terminal, such as
    the command line; the library itself leaves logging configuration to its caller."""
    create = logging.getLogRecordFactory()
    if getattr(create, "printable", False):
        return

    def create_printable(*args: object, **kwargs: object) -> logging.LogRecord:
        record = create(*args, **kwargs)
        # A bad format is left for logging to report as usual.
        with suppress(TypeError, ValueError, KeyError):
            record.msg, record.args = printable(record.getMessage()), None
        return record

    create_printable.printable = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(create_printable)
