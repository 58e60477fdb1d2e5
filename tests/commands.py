"""The command line run in-process, as the tests call it: (exit status, standard output, standard error)."""

from __future__ import annotations

from lumbar_kb.main import main


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
