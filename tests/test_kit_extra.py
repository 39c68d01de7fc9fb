"""The property-test kit needs hypothesis (the `kit` extra): without it, importing the kit is a
MissingExtra naming the extra, not a bare ImportError."""
import subprocess
import sys


def test_kit_without_hypothesis_names_the_extra():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "from robustspec.dsl.errors import MissingExtra\n"
            "try:\n"
            "    import robustspec.compiler.testing\n"
            "except MissingExtra as e:\n"
            "    print('MissingExtra:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "MissingExtra:" in out.stdout, out.stderr
    assert "pip install 'robustspec[kit]'" in out.stdout and "hypothesis" in out.stdout
