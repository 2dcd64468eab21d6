"""The demo corpus: the Python Language Reference that ships with every Python (pydoc_data.topics)."""

import pydoc_data.topics

DEMO_COLLECTION = "python-reference"


def python_reference() -> dict[str, str]:
    """Topic key -> text; the key is the document id, so a citation names the topic it came from."""
    return dict(sorted(pydoc_data.topics.topics.items()))
