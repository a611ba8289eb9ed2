"""ImageNet-1k class names, for the released paper weights (which store none).

``imagenet_classes.txt`` lists the 1000 WordNet synsets of ILSVRC-2012 in index order (sorted by wnid, the order
of the class folders), each with its WordNet lemmas: ``n01440764<TAB>tench, Tinca tinca``.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def imagenet_synsets() -> tuple[tuple[str, str], ...]:
    """(wnid, lemmas) for class index 0..999."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line)  # type: ignore[misc]


def imagenet_classes() -> list[str]:
    """Short display names: the first lemma of each synset ("tench", "goldfish", ...); 1000 entries."""
    return [lemmas.split(", ")[0] for _, lemmas in imagenet_synsets()]
