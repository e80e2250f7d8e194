"""The ragfn chat's entry point: `streamlit run ui/app.py` (`ragfn dev` starts it)."""

import sys
from pathlib import Path

# `streamlit run` puts only ui/ on sys.path; the app imports itself as the `ui` package, as the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ui.chat import main  # noqa: E402

main()
