"""One vocabulary: every concept has one flag, every flag one meaning, no abbreviations."""

from __future__ import annotations

import argparse

import pytest

from srmil.cli.common import ALIASES, LEGACY_ALIASES, VOCABULARY
from srmil.cli.main import build_parser, main

# benchmarks sweep lists of the same concepts (``--workers 0,2``): their flags are their own
OWN_VOCABULARY = {"bench"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser):
    for a in p._actions:
        if a.option_strings and not isinstance(a, argparse._HelpAction):
            hidden = set(getattr(a, "hidden_aliases", ()))
            for o in a.option_strings:
                yield a, o, o in hidden


def test_no_parser_abbreviates_flags():
    assert build_parser().allow_abbrev is False
    for name, p in _commands().items():
        assert p.allow_abbrev is False, name


def test_a_prefix_is_not_another_flag(capsys):
    """``srmil compare --model x`` would be ``--models x``; it is refused as unknown (and
    ``srmil cv --fold 0`` is its own flag, one fold, never ``--folds 0``)."""
    with pytest.raises(SystemExit) as e:
        main(["compare", "--labels", "l.csv", "--bags", "b", "--out", "o", "--models", "mean",
              "--model", "abmil"])
    assert e.value.code == 2
    assert "unrecognized arguments: --model abmil" in capsys.readouterr().err
    args = build_parser().parse_args(["cv", "--labels", "l", "--bags", "b", "--out", "o",
                                      "--fold", "0"])
    assert args.fold == 0 and args.folds is None


def test_every_visible_flag_is_in_the_vocabulary_with_its_meaning():
    for name, p in _commands().items():
        if name in OWN_VOCABULARY:
            continue
        for action, opt, hidden in _options(p):
            if hidden or not opt.startswith("--") or opt in ("--quiet", "--verbose"):
                continue
            assert opt in VOCABULARY, f"srmil {name} {opt}: not in the vocabulary"
            assert action.help.startswith(VOCABULARY[opt]), (
                f"srmil {name} {opt}: its help does not start with the shared meaning")


def test_one_concept_one_spelling():
    meanings = list(VOCABULARY.values())
    assert len(meanings) == len(set(meanings))
    for old, new in ALIASES.items():
        assert new in VOCABULARY and old not in VOCABULARY, old
    for name, p in _commands().items():
        shown = {o for _, o, hidden in _options(p) if not hidden}
        assert not shown & set(ALIASES), f"srmil {name} shows an old spelling"


def test_one_spelling_one_meaning():
    """The same flag has the same dest, type, action and nargs in every command."""
    seen: dict[str, tuple] = {}
    for name, p in _commands().items():
        if name in OWN_VOCABULARY:
            continue
        for action, opt, hidden in _options(p):
            if hidden:
                continue
            sig = (action.dest, action.type, type(action).__name__, action.nargs)
            if opt in seen:
                assert seen[opt][1] == sig, f"{opt}: {seen[opt][0]} {seen[opt][1]}, {name} {sig}"
            else:
                seen[opt] = (name, sig)


def test_hidden_aliases_are_declared_and_are_the_same_flag():
    for name, p in _commands().items():
        for action, opt, hidden in _options(p):
            if not hidden:
                continue
            canonical = action.option_strings[0]
            assert ALIASES.get(opt) == canonical or LEGACY_ALIASES.get((name, opt)) == canonical
            assert opt not in p.format_help(), f"srmil {name} --help shows {opt}"


@pytest.mark.parametrize("argv,dest,value", [
    (["train", "--labels", "l", "--features", "F", "--out", "o"], "bags", "F"),
    (["cv", "--labels", "l", "--bags", "b", "--out", "o", "--accelerator", "cpu"], "device",
     "cpu"),
    (["extract", "--slides", "s", "--out", "o", "--encoder", "e", "--precision", "fp16"],
     "dtype", "fp16"),
    (["extract", "--slides", "s", "--out", "o", "--encoder", "e", "--dtype", "float16"],
     "dtype", "fp16"),
    (["synth", "out", "--slides", "7"], "n_slides", 7),
    (["report", "RUN"], "run_positional", "RUN"),
])
def test_old_spellings_still_work(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value
