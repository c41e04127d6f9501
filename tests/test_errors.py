"""srmil.errors.first_line: the one line of an error message the CLI and status tables show."""

from srmil.errors import exc_line, first_line


def test_first_line_of_messages_and_of_a_reraised_traceback():
    text = ("Caught SrmilError in DataLoader worker process 0.\nOriginal Traceback (most recent "
            "call last):\n  File \"x.py\", line 1, in f\n    g()\nsrmil.errors.SrmilError: "
            "a.svs: cannot read slide pixels: bad\n")
    assert first_line(text) == "a.svs: cannot read slide pixels: bad"
    assert first_line("\n  first \nsecond") == "first"
    assert first_line("Unable to open file (truncated file: eof = 96)\nmore") == (
        "Unable to open file (truncated file: eof = 96)")
    assert first_line("") == "" and first_line(" \n ") == ""


def test_exc_line_never_fails_on_an_empty_message():
    assert exc_line(ValueError("bad row 3\ncontext")) == "bad row 3"
    assert exc_line(KeyError()) == "KeyError"  # was an IndexError from splitlines()[0]
