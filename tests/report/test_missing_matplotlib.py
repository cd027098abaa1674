"""Figures without matplotlib name the extra that installs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_pyplot_without_matplotlib_names_the_cli_extra():
    code = """
        import sys
        sys.modules["matplotlib"] = None
        from torchvat._extras import MissingExtraError
        from torchvat.report import pyplot
        try:
            pyplot()
        except MissingExtraError as error:
            print(error)
        """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "drawing torchvat's figures needs matplotlib, which is not installed: pip install 'torchvat[cli]'"
    )
