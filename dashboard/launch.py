"""``python -m dashboard.launch run APP ...``: the Streamlit server with the dashboard's heavy
imports done before it listens.

Streamlit imports a page's modules on the first visit, so the first user waited for numpy,
pandas, scikit-learn, plotly, torch and zennit (seconds) before the first chart, and a
background import of torch starved the server loop. Imported here, before the server answers,
every visit finds them loaded. Then the run the first page opens is prepared
(:mod:`dashboard.warm`): Streamlit's caches are process-wide, so what is computed here is what
the first visit finds.
"""

from __future__ import annotations

import gc
import importlib
import sys

WARM_MODULES = (
    "numpy",
    "pandas",
    "scipy.stats",
    "sklearn.metrics",
    "plotly.graph_objects",
    "dashboard.vega_charts",
    "PIL.Image",
    "nero.run.directory",
    "nero.run.report",
    "nero.run.conformal",
    "nero.run.verdicts",
    "nero.run.reviews",
    "nero.run.embedding",
    "nero.run.scoring",  # torch, torchvision
    "nero.run.heatmaps",  # zennit
)


def warm_imports() -> list[str]:
    """Import :data:`WARM_MODULES`; the names that could not be imported (their pages say
    what failed when they need them)."""
    failed = []
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            failed.append(name)
    return failed


def freeze_what_lives_forever() -> None:
    """Move every object alive now (modules, the warmed caches) out of the collector's reach.

    Streamlit runs a full collection after every script run (``runner.postScriptGC``); with
    torch, scikit-learn, pandas and Plotly loaded it walked ~500 000 objects, 0.24 s per rerun
    on this machine, holding the GIL while the page's last messages waited to be sent: a
    quarter of a sample switch. Frozen objects are never freed, which these are not anyway;
    what pages create later is collected as before.
    """
    gc.collect()
    gc.freeze()


def main() -> int:
    warm_imports()
    from dashboard.warm import warm_from_argv

    warm_from_argv(sys.argv)  # the first page's cache fills (caches are process-wide)
    from streamlit.web import cli

    freeze_what_lives_forever()

    sys.argv = ["streamlit", *sys.argv[1:]]
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main())
