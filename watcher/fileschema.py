"""The JSON Schema of the results file, generated from the model the daemon validates with.

:func:`results_file_schema` starts from pydantic's schema of :class:`watcher.resultfile.ResultFile`
and adds what the model's own checks enforce beyond its types (the UUID and RFC 3339 patterns, the
e-mail format) and, in words, what JSON Schema cannot say (equal lengths, increasing thresholds).
The result ships in the package (``watcher/results-file.schema.json``) and on the docs site
(``docs/results-file.schema.json``); ``python -m watcher.fileschema`` rewrites both, and a test
checks both equal a fresh generation.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from watcher import resultfile

FILE_NAME = "results-file.schema.json"
#: The shipped copies, relative to the repository's root: in the package, and on the docs site.
COPIES = (Path("watcher") / FILE_NAME, Path("docs") / FILE_NAME)

_CROSS_RULES = (
    "Rules JSON Schema cannot state, which the daemon also applies: threshold_arr and recall_arr "
    "(and precision_arr and fpr_arr when given) have the same length; each threshold is greater than "
    "the one before; no key appears twice; "
    "the file is UTF-8 (a leading BOM is tolerated) and at most max_file_bytes (64 MiB by default); "
    "issuer passes the email-validator package's syntax check; experiment_date is a possible date "
    "and time."
)


def results_file_schema() -> dict[str, Any]:
    """The schema (draft 2020-12), as a dict."""
    schema = resultfile.ResultFile.model_json_schema()
    props = schema["properties"]
    props["model_id"].update(
        description="A UUID in 8-4-4-4-12 hex form, any case (stored in lowercase).",
        pattern=f"^{resultfile._UUID.pattern}$",
    )
    props["issuer"].update(description="A syntactically valid e-mail address, without a display name.", format="email")
    props["experiment_date"].update(
        description="RFC 3339 date-time with seconds and an explicit offset, up to 6 fraction digits.",
        pattern=f"^{resultfile._RFC3339.pattern}$",
        format="date-time",
    )
    props["threshold_arr"]["description"] = "Probability thresholds in [0, 1], strictly increasing."
    props["recall_arr"]["description"] = "The recall at each threshold, in [0, 1]; same length as threshold_arr."
    for name, what in (("precision_arr", "precision"), ("fpr_arr", "false positive rate")):
        props[name]["description"] = (
            f"Optional: the {what} at each threshold, in [0, 1]; same length as threshold_arr. null is the "
            "same as leaving the key out."
        )
    props["schema_version"].update(
        description="The format's version, an integer; a file without it is version 1. A version this "
        "watcher does not read is rejected.",
        enum=list(resultfile.SCHEMA_VERSIONS),
    )
    schema["description"] = (
        "One evaluated model, as the watcher daemon validates it. Numbers are JSON numbers (not strings, "
        "booleans or null); other keys are ignored. " + _CROSS_RULES
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "additionalProperties": True}


def schema_text() -> str:
    """The schema as the shipped files hold it."""
    return json.dumps(results_file_schema(), indent=2, ensure_ascii=False) + "\n"


def shipped_schema() -> dict[str, Any]:
    """The schema file shipped in the installed package."""
    loaded: dict[str, Any] = json.loads(resources.files("watcher").joinpath(FILE_NAME).read_text("utf-8"))
    return loaded


def main(argv: list[str]) -> int:
    """``python -m watcher.fileschema``: print the schema; ``--write``: rewrite the shipped copies
    (run from the repository's root)."""
    text = schema_text()
    if argv[1:] == ["--write"]:
        for path in COPIES:
            path.write_text(text, encoding="utf-8")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
